// Test helpers: a real `herald serve` node per test, a cuttable TCP proxy,
// the server API, and bounded waits.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const HERALD_BIN = resolve(join(here, ".."), process.env.TEST_HERALD_BIN ?? "../../target/debug/herald");
export const API_KEY = "test-api-key-0123456789";

/** Waits until `fn()` is truthy (polling every 10 ms), at most `ms`. */
export async function waitFor(fn, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves with the next `event` of `emitter` (optionally matching `pred`), at most `ms`. */
export function next(emitter, event, pred = () => true, ms = 5000) {
  return new Promise((res, rej) => {
    const t = setTimeout(() => {
      off();
      rej(new Error(`timed out after ${ms} ms waiting for "${String(event)}"`));
    }, ms);
    const off = emitter.on(event, (e) => {
      if (!pred(e)) return;
      clearTimeout(t);
      off();
      res(e);
    });
  });
}

/** Bounds a promise. */
export function within(p, ms = 5000, what = "promise") {
  let t;
  return Promise.race([p, new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]).finally(() =>
    clearTimeout(t),
  );
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("HERALD_")) env[k] = v;
  env.RUST_LOG = "warn";
  return env;
}

/**
 * Starts `herald serve` on `port` (a free one by default) and waits for
 * /health. `limits` go to a [limits] section of a TOML config file; `args`
 * are more flags.
 */
export async function startNode({ port, limits, args: extra = [] } = {}) {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(
      `herald binary not found at ${HERALD_BIN}: build it with \`cargo build -p herald-gateway --bin herald\` in the repository root, or set TEST_HERALD_BIN`,
    );
  }
  port ??= await freePort();
  const dir = mkdtempSync(join(tmpdir(), "herald-ts-"));
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--shards", "1", "--api-key", API_KEY, "--data-dir", join(dir, "data"), ...extra];
  if (limits) {
    const toml = "[limits]\n" + Object.entries(limits).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join("\n") + "\n";
    writeFileSync(join(dir, "herald.toml"), toml);
    args.push("--config", join(dir, "herald.toml"));
  }
  const proc = spawn(HERALD_BIN, args, { env: cleanEnv(), stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  proc.stderr.on("data", (d) => (log += d));
  const exited = new Promise((r) => proc.once("exit", (code, signal) => r({ code, signal })));
  let dead = false;
  exited.then(() => (dead = true));
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(async () => {
      if (dead) throw new Error(`herald exited during start:\n${log}`);
      try {
        return (await fetch(`${base}/health`)).ok;
      } catch {
        return false;
      }
    }, 10000, "the node's /health");
  } catch (e) {
    proc.kill("SIGKILL");
    throw e;
  }
  const node = {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    base,
    log: () => log,
    exited,
    /** Sends `signal` and waits for the exit (SIGKILL after `ms`). */
    async stop(signal = "SIGTERM", ms = 8000) {
      if (!dead) {
        proc.kill(signal);
        const t = setTimeout(() => proc.kill("SIGKILL"), ms);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
    /** Calls the server API; returns the parsed JSON (throws on HTTP errors). */
    async api(method, path, body) {
      const r = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
      return JSON.parse(text);
    },
  };
  return node;
}

/**
 * A TCP proxy in front of `target` port. `cut()` destroys every open
 * connection (a link drop); `blockDown` drops server-to-client bytes (so
 * answers are lost); `freeze` stops forwarding in both directions without
 * closing (a dead link).
 */
export async function startProxy(target) {
  const conns = new Set();
  const proxy = {
    blockDown: false,
    freeze: false,
    connections: 0,
    cut() {
      for (const c of conns) {
        c.client.destroy();
        c.upstream.destroy();
      }
      conns.clear();
    },
  };
  const server = net.createServer((client) => {
    proxy.connections++;
    const upstream = net.connect(target, "127.0.0.1");
    const c = { client, upstream };
    conns.add(c);
    client.on("data", (d) => {
      if (!proxy.freeze) upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (!proxy.freeze && !proxy.blockDown) client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(c);
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.port = server.address().port;
  proxy.url = `ws://127.0.0.1:${proxy.port}/ws`;
  proxy.close = () =>
    new Promise((r) => {
      proxy.cut();
      server.close(() => r());
    });
  return proxy;
}

// Browser test support: the directory a node serves at /app/ (the example
// chat, the client bundle, the harness pages) and Debian's Chromium driven
// by playwright-core.
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, "../..");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** A fresh site directory; `remove()` deletes it. */
export async function site() {
  const dir = mkdtempSync(join(tmpdir(), "herald-site-"));
  cpSync(join(pkg, "example"), dir, { recursive: true });
  cpSync(join(pkg, "dist/herald.min.js"), join(dir, "herald.min.js"));
  cpSync(join(here, "pages"), dir, { recursive: true });
  // Server-side frame builders for the in-page decode benchmark.
  await esbuild.build({
    entryPoints: [join(pkg, "test/wire.mjs")],
    outfile: join(dir, "wire.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    alias: { flatbuffers: join(pkg, "node_modules/flatbuffers/mjs/flatbuffers.js") },
    logLevel: "warning",
  });
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Headless Chromium (Debian's package: `apt-get install chromium`). */
export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install chromium, or set CHROMIUM_BIN`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
}

/** A page in its own browser context (own cookies and storage), with bounded waits. */
export async function page(browser) {
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  p.setDefaultTimeout(15000);
  const errors = [];
  p.on("pageerror", (e) => errors.push(e));
  p.errors = errors;
  return p;
}

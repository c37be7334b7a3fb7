// Builds dist/: tsc (per-file ES modules + .d.ts) and the single-file,
// minified ESM bundle dist/herald.min.js (flatbuffers runtime included).
import { execFileSync } from "node:child_process";
import { copyFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

rmSync(join(root, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", join(root, "tsconfig.json")], {
  cwd: root,
  stdio: "inherit",
});

await esbuild.build({
  entryPoints: [join(root, "src/index.ts")],
  outfile: join(root, "dist/herald.min.js"),
  bundle: true,
  minify: true,
  format: "esm",
  platform: "neutral",
  target: "es2020",
  tsconfig: join(root, "tsconfig.json"),
  // The generated bindings live outside this package: resolve their
  // `flatbuffers` import to this package's copy (the ES module build).
  alias: { flatbuffers: join(root, "node_modules/flatbuffers/mjs/flatbuffers.js") },
  // Internal members (`_name`) are private to the bundle: shorten them.
  mangleProps: /^_[a-zA-Z]/,
  legalComments: "none",
  logLevel: "warning",
});

// The example page imports the bundle from its own directory, so a node
// serving example/ (`herald serve --static-dir clients/ts/example`) serves
// both.
copyFileSync(join(root, "dist/herald.min.js"), join(root, "example/herald.min.js"));

// Prints the size of dist/herald.min.js (raw and gzip -9) and fails above
// the budget: 20 KB gzipped.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const LIMIT = 20 * 1024;
const file = join(dirname(fileURLToPath(import.meta.url)), "../dist/herald.min.js");
const raw = readFileSync(file);
const gz = gzipSync(raw, { level: 9 }).length;
console.log(`dist/herald.min.js: ${raw.length} bytes minified, ${gz} bytes gzipped (limit ${LIMIT})`);
if (gz > LIMIT) {
  console.error(`size: ${gz} bytes gzipped exceeds the ${LIMIT}-byte budget`);
  process.exit(1);
}

#!/usr/bin/env bash
# Gzipped size of herald-client beside socket.io-client and centrifuge-js,
# each bundled the same way (esbuild: one minified ES module for browsers,
# gzip level 9), and their own published minified builds.
# usage: clients/ts/bench/compare-sizes.sh [SOCKETIO_VERSION] [CENTRIFUGE_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
SIO=${1:-4.8.4} CF=${2:-5.8.0}
npm run --silent build >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error \
  "socket.io-client@$SIO" "centrifuge@$CF" esbuild@0.28.2 >/dev/null)
echo 'import { io } from "socket.io-client"; globalThis.x = io;' >"$tmp/sio.mjs"
echo 'import { Centrifuge } from "centrifuge"; globalThis.x = Centrifuge;' >"$tmp/cf.mjs"
size() { printf '%s B minified, %s B gzipped' "$(wc -c <"$1")" "$(gzip -9c "$1" | wc -c)"; }
for f in sio cf; do
  (cd "$tmp" && npx esbuild "$f.mjs" --bundle --minify --format=esm --platform=browser --outfile="$f.js" --log-level=error)
done
echo "herald-client $(node -p 'require("./package.json").version') (dist/herald.min.js): $(size dist/herald.min.js)"
echo "socket.io-client $SIO (esbuild): $(size "$tmp/sio.js"); dist/socket.io.min.js: $(size "$tmp/node_modules/socket.io-client/dist/socket.io.min.js")"
echo "centrifuge $CF (esbuild): $(size "$tmp/cf.js"); dist/centrifuge.js: $(size "$tmp/node_modules/centrifuge/dist/centrifuge.js"); dist/centrifuge.protobuf.js: $(size "$tmp/node_modules/centrifuge/dist/centrifuge.protobuf.js")"

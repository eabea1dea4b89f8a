#!/usr/bin/env bash
# Builds the hydrating front end: the `frontend` crate for wasm32 with Debian's rustc-web and
# -Zbuild-std (rustup cannot download the wasm32 std here), then wasm-bindgen into the site
# directory that `switchyard serve` serves (target/site: pkg/switchyard.js, pkg/switchyard_bg.wasm,
# pkg/switchyard.css and the files of public/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-frontend-deps.sh

SITE=target/site
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/front"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build -p frontend --lib \
  --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
  --profile wasm-release --target-dir "$TARGET_DIR"

rm -rf "$SITE.new" && mkdir -p "$SITE.new/pkg"
cp -r public/. "$SITE.new/"
cp style/main.css "$SITE.new/pkg/switchyard.css"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-name switchyard --out-dir "$SITE.new/pkg" \
  "$TARGET_DIR/wasm32-unknown-unknown/wasm-release/frontend.wasm"
rm -rf "$SITE" && mv "$SITE.new" "$SITE"
size=$(stat -c %s "$SITE/pkg/switchyard_bg.wasm")
gz=$(gzip -9 -c "$SITE/pkg/switchyard_bg.wasm" | wc -c)
echo "front end built: $SITE/pkg/switchyard_bg.wasm $((size / 1024)) KiB ($((gz / 1024)) KiB gzip)"

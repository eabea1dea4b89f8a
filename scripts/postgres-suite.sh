#!/usr/bin/env bash
# Runs the integration suite against PostgreSQL (every test makes its own scratch database on
# that server). When no server answers: in CI that is an error; elsewhere the suite is skipped
# with a loud notice, since SQLite has already been covered.
set -euo pipefail
url="$1"
reachable() { psql "$url" -Atqc 'select 1' >/dev/null 2>&1; }

if ! reachable && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  # The service may simply be stopped on this machine: start it.
  for v in /etc/postgresql/*; do pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start >/dev/null 2>&1 || true; done
  for _ in $(seq 1 20); do reachable && break; sleep 0.5; done
fi

if ! reachable; then
  if [ "${CI:-}" = "true" ]; then
    echo "ERROR: PostgreSQL at $url is not reachable; CI must run the PostgreSQL suite" >&2
    exit 1
  fi
  echo "################################################################################"
  echo "## SKIPPED: PostgreSQL integration suite (no server answers at $url)"
  echo "## Start PostgreSQL or set PG_TEST_URL=postgres://... and re-run make test"
  echo "################################################################################"
  exit 0
fi
echo "== integration suite on PostgreSQL ($url) =="
DATABASE_URL="$url" cargo test -p server --test api
# The store's own unit tests that take DATABASE_URL (they use SQLite without it).
DATABASE_URL="$url" cargo test -p server --lib store::

# Switchyard: `make run` builds and serves on 127.0.0.1:3000 with the embedded database;
# `make test` runs every check. Both install what they need first (idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test
BIND ?= 127.0.0.1:3000

.PHONY: help deps contract-deps frontend build run test fmt lint test-unit test-sqlite test-postgres test-contract test-e2e bench bench-workflows clean

help:
	@echo "make run    build (release) and serve on http://$(BIND) with the embedded SQLite database"
	@echo "make test   fmt check, clippy, unit tests, integration tests on SQLite and PostgreSQL, contract suite, browser tests"
	@echo "make bench  throughput and queue latency of no-op runs on SQLite and PostgreSQL"
	@echo "make bench-workflows  10-step chain and 1-50-1 fan-out workflow runs on SQLite and PostgreSQL"

deps:
	@scripts/install-deps.sh

contract-deps:
	@scripts/install-contract-deps.sh

frontend: deps
	scripts/build-frontend.sh

build: frontend
	cargo build --release -p server

run: frontend
	cargo run --release -p server --bin switchyard -- serve --bind $(BIND)

fmt:
	cargo fmt --all

lint: deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

test-unit: deps
	cargo test --lib --bins

test-sqlite: deps
	@echo "== integration suite on SQLite =="
	env -u DATABASE_URL cargo test -p server --test api

test-postgres: deps
	@scripts/postgres-suite.sh "$(PG_TEST_URL)"

# schemathesis against a real server, in open mode and with a token (scripts/contract-suite.sh).
test-contract: deps contract-deps
	# Builds target/debug/switchyard as the integration tests do (no rebuild of deps).
	cargo test -p server --test api --no-run
	scripts/contract-suite.sh

test-e2e: frontend
	# Builds target/debug/switchyard with the same features as the test run (no rebuild of deps).
	cargo test -p server --test api --no-run
	cd end2end && { [ -d node_modules/@playwright/test ] || npm ci --no-audit --no-fund; } && npx playwright test

test: lint test-unit test-sqlite test-postgres test-contract test-e2e
	@echo "make test: all checks passed"

bench: deps
	cargo run --release -p server --bin switchyard -- bench --database both --runs 2000

bench-workflows: deps
	cargo run --release -p server --bin switchyard -- bench --workflows --database both

clean:
	cargo clean

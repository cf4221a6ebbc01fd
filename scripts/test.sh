#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test, including the real-backend tests
# (each makes its own PostgreSQL database on the local server and drops it afterwards).
#
# On a fresh Debian machine it installs and starts what the tests need (PostgreSQL,
# redis-server) when they are missing; that part needs root.
#
#   ./scripts/test.sh              everything
#   ./scripts/test.sh -p quiz-engine   extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1
    fi
}

apt_install() {
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL on 127.0.0.1:5432 that QUIZ_TEST_PG_URL (an admin URL) can reach.
ensure_postgres() {
    export QUIZ_TEST_PG_URL="${QUIZ_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    if ! command -v pg_ctlcluster >/dev/null || ! command -v psql >/dev/null; then
        apt_install postgresql postgresql-client
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        log "starting PostgreSQL"
        for version in $(ls /etc/postgresql); do
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        done
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
    if ! psql "$QUIZ_TEST_PG_URL" -qtAc 'select 1' >/dev/null 2>&1; then
        # A fresh install asks for a password over TCP: give the admin role one for the tests.
        log "setting a test password for the postgres role"
        as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'quiz-test'\"" >/dev/null
        export QUIZ_TEST_PG_URL="postgres://postgres:quiz-test@127.0.0.1:5432/postgres"
        psql "$QUIZ_TEST_PG_URL" -qtAc 'select 1' >/dev/null
    fi
}

ensure_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server
    fi
}

ensure_postgres
ensure_redis

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked "$@"
log "all tests passed"

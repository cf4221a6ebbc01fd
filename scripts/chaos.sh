#!/usr/bin/env bash
# The chaos suite: every fault scenario of `quiz-chaos`, three rounds each, each round on a
# fresh multi-process cluster, Redis Cluster and PostgreSQL database, checked against the
# stores; the report goes to chaos/results/all.md. Then the owner-failover measurement (20
# SIGKILLs). Takes about 15 minutes on 2 cores; the test suite runs `quiz-chaos smoke`
# (chaos/tests/smoke.rs) instead.
#
#   ./scripts/chaos.sh                   everything below
#   ./scripts/chaos.sh owner-kill ...    only the scenarios named (report on stdout)
#
# Needs redis-server and a PostgreSQL server at QUIZ_TEST_PG_URL (./scripts/test.sh installs
# both on a fresh Debian machine).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p quiz-chaos
chaos=target/release/quiz-chaos
if [ "$#" -gt 0 ]; then
    exec "$chaos" run "$@"
fi
"$chaos" all --out chaos/results/all.md
"$chaos" failover --out chaos/results/failover.md

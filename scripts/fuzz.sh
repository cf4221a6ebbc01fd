#!/usr/bin/env bash
# The long fuzz run: arbitrary and mutated input into every decoder a hostile peer reaches
# (client frames, cluster frames, question-set imports: protocol/tests/fuzz.rs) and the
# session-token check (node/src/auth.rs), as property tests on the stable toolchain. The test
# suite runs the same targets with 2,000 cases each; this runs CASES (default 1,000,000) in
# release. Needs nothing but cargo.
#
#   ./scripts/fuzz.sh            1,000,000 cases per target
#   CASES=100000 ./scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export QUIZ_FUZZ_CASES="${CASES:-1000000}"
started=$(date +%s)
cargo test --release --locked -p quiz-protocol --test fuzz
cargo test --release --locked -p quiz-node auth::tests
echo "fuzzed ${QUIZ_FUZZ_CASES} cases per target in $(( $(date +%s) - started )) s"

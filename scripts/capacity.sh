#!/usr/bin/env bash
# The capacity suite at the design's sizes: every `quiz-bench` capacity bench, each report
# written under bench/results/. Slow (about an hour on 2 cores), so it runs outside the
# test suite, which runs each bench's `--quick` form (bench/tests/capacity.rs).
#
#   ./scripts/capacity.sh                  every run below
#   ./scripts/capacity.sh big-quiz-50k     only the runs named
#
# Every bench starts its own cluster and load processes on 127.0.0.0/8, stops them by PID
# when it ends, and has deadlines of its own; each run is also capped here.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p quiz-bench
bench=target/release/quiz-bench

declare -A runs=(
    [connections-per-node]="connections --nodes 1 --phones 1000,10000,19000"
    [connections-cluster]="connections --nodes 6 --phones 100000 --quizzes 10"
    [big-quiz-10k]="big-quiz --phones 10000 --rate 2000 --questions 3 --load-processes 2 --runs 3"
    [big-quiz-10k-real]="big-quiz --backend real --phones 10000 --rate 2000 --questions 3 --load-processes 2 --runs 3"
    [big-quiz-50k]="big-quiz --nodes 5 --phones 50000 --rate 2000 --questions 2 --load-processes 5"
    [join-storm-10k]="join-storm --phones 10000 --runs 3"
    [join-storm-50k]="join-storm --nodes 5 --phones 50000 --load-processes 5 --runs 1"
    [failover-at-scale]="failover-at-scale --phones 10000 --runs 3"
)
order=(connections-per-node connections-cluster big-quiz-10k big-quiz-10k-real big-quiz-50k
    join-storm-10k join-storm-50k failover-at-scale)

chosen=("$@")
[ ${#chosen[@]} -gt 0 ] || chosen=("${order[@]}")
failed=()
for name in "${chosen[@]}"; do
    [ -n "${runs[$name]:-}" ] || { echo "no run named $name (runs: ${order[*]})" >&2; exit 2; }
    printf '\n== %s: quiz-bench %s\n' "$name" "${runs[$name]}" >&2
    # shellcheck disable=SC2086
    if ! timeout 2400 "$bench" ${runs[$name]} --out "bench/results/$name.md" >/dev/null; then
        failed+=("$name")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "runs that failed (their reports say why): ${failed[*]}" >&2
    exit 1
fi
echo "reports in bench/results/" >&2

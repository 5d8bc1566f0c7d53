#!/usr/bin/env bash
# Several replicas on one PostgreSQL database (issue 13, docs/ha.md). Prints:
#   - failover time: kill -9 of the replica holding a restore in flight → the other replica
#     claims the run (target: <= engine.lease + 10 s), and the restore POSTs the simulator saw;
#   - claim throughput with 1, 2 and 3 replicas (4 workers each, a connection pool each) on a
#     queue of 10,000 short runs (claim, then finish: the coordination through the database,
#     without VB365 work);
#   - database round trips per step: the statements a 30-odd-step export sends (counted by
#     pg_stat_statements), minus what the idle daemon sends in as long, per step.
# Runs tests/daemon/replicas.rs `bench_replicas` (ignored in the suite) against a throwaway
# PostgreSQL cluster it starts from the system's binaries (/usr/lib/postgresql/*/bin), with the
# real binary for the replicas. Not a test: it only prints.
#
# Usage: bench/replicas.sh [RUNS] [LEASE_SECONDS]    (defaults: 10000 runs, 10 s)
#        PROFILE=dev bench/replicas.sh                (default: release)
set -euo pipefail

runs=${1:-10000}
lease=${2:-10}
profile=${PROFILE:-release}
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
BENCH_RUNS=$runs BENCH_LEASE_SECONDS=$lease \
  cargo test --quiet --profile "$profile" --test daemon bench_replicas -- --ignored --nocapture --test-threads 1 2>&1 \
  | grep -v '^running \|^test result\|^$\|has been running for over'

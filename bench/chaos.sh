#!/usr/bin/env bash
# Long chaos run (issue 8): the real `restorectl daemon` against the in-process simulator with
# random faults and `kill -9` at random instants (see tests/daemon/chaos.rs), with at least 100 kills.
# Prints the invariant table (seed, kills, faults injected by kind, runs by state, steps,
# duplicates found, corrupt files, leaked sessions) and fails when an invariant is violated.
#
# Usage: bench/chaos.sh [KILLS]            (default 100)
#        CHAOS_SEED=1234 bench/chaos.sh    (replay a seed printed by an earlier run)
set -euo pipefail

kills=${1:-100}
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
CHAOS_KILLS=$kills cargo test --quiet --test daemon chaos -- --nocapture --test-threads 1 2>&1 \
  | grep -v '^running \|^test result\|^$'

#!/usr/bin/env bash
# Benchmarks of the metadata quorum with real weir-server processes on 127.0.0.1 (release
# build): controller failover, broker failure to new partition leaders, 1,000 topics x 10
# partitions and a whole-cluster restart. Prints JSON lines; see docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p weir-server --test quorum_bench -- --ignored --nocapture --test-threads 1 "$@" \
  | grep -o '{"bench".*'

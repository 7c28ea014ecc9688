#!/usr/bin/env bash
# Every benchmark, one after the other (docs/PERFORMANCE.md says what each
# measures and its goal). `--quick`: a few iterations each, for CI, so that
# none of them rots; it asserts nothing about time.
#
#   scripts/bench.sh            # the figures of docs/PERFORMANCE.md (minutes)
#   scripts/bench.sh --quick
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
case "${1:-}" in
--quick) quick=(--quick) ;;
"") ;;
*)
    echo "usage: $0 [--quick]" >&2
    exit 64
    ;;
esac

cargo bench --bench machine -- "${quick[@]}"
cargo bench --bench process -- "${quick[@]}"
cargo bench --bench replay -- "${quick[@]}"
cargo bench --bench watch_latency -- "${quick[@]}"

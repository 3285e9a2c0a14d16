#!/usr/bin/env bash
# One encrypted engine link on loopback against plain blocking TCP, side by side in one run
# (`ringspan-bench link`):
# one-way throughput and request-reply round trips at 64 B, 1 KiB and 65,504 B messages.
# Writes perf/results/link.csv (each row stamped with date, commit and CPU: perf/lib.sh) and
# prints the table with ratios.
#
#   perf/link.sh            3 s per measurement (about 40 s)
#   perf/link.sh --quick    0.5 s per measurement (about 10 s)
# Other options go to `ringspan-bench link` (--seconds S, --sizes A,B, --one-way-only).
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/lib.sh
cargo build --release --quiet --bin ringspan-bench
commit=$(commit_of_tree)
mkdir -p perf/results
csv=perf/results/link.csv
"$release/ringspan-bench" link --csv "$csv" "$@"
stamp_csv "$csv" "$commit"
stamp_text "$commit"

#!/usr/bin/env bash
# A/B of two or more ringspan builds (or settings), alternating, through the same chain as
# perf/hops.sh: `ringspan-bench hops send -> HOPS ringspan run relays -> ringspan-bench hops
# receive`, every process from the build under test. Each BIN is a `ringspan` binary with the
# build's `ringspan-bench` beside it (`cargo build --release` makes both). One line per run: the
# binary and its msgs/s (one-way) or its RTT p50/p99/p99.9 µs, then perf/lib.sh's stamp as
# key=value pairs: the date, that binary's own commit and the CPU. With the rate, the relays'
# CPU time per message and hop (user + system, from /proc, over the whole run, warm-up
# included): on a 2-core machine, where sender, relays and receiver share the cores, the rate
# moves with the load generators while the relays' own cost per message does not. Alternating runs, on this
# noisy VM, are how the "changes and their effect" rows of perf/RESULTS.md were measured.
#
# A binary's commit is that of the git tree that built it, found through cargo's dep-info file
# beside it (BIN.d): "unknown" if there is none or its tree is gone, "-dirty" if the tree has
# uncommitted changes, "-stale" if a source of it there is newer than the binary.
#
#   perf/ab.sh [--rounds N] [--size B] [--hops H] [--mode one-way|rtt|rtt-stream]
#              [--seconds S] [--busy-poll-us U] [--window-bytes W] BIN...
#
# e.g. build a variant with CARGO_TARGET_DIR=/tmp/b cargo build --release, then:
#   perf/ab.sh --rounds 3 --hops 2 target/release/ringspan /tmp/b/release/ringspan
# --busy-poll-us and --window-bytes apply to every binary (relays' [limits] busy_poll_us, the
# bench's flags); to compare settings, run the script once per setting, alternately.
set -euo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
rounds=3 size=128 hops=1 mode=one-way seconds=3 poll="" window=""
while (($#)); do
  case $1 in
    --rounds) rounds=$2; shift ;;
    --size) size=$2; shift ;;
    --hops) hops=$2; shift ;;
    --mode) mode=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --busy-poll-us) poll=$2; shift ;;
    --window-bytes) window=$2; shift ;;
    -*) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
(($#)) || { echo "usage: see the header of $0" >&2; exit 2; }
for bin in "$@"; do
  [[ -x $(dirname "$bin")/ringspan-bench ]] ||
    { echo "no ringspan-bench beside $bin (build both binaries: cargo build --release)" >&2; exit 2; }
done
# Each binary's commit, once, before anything runs.
bins=("$@") commits=()
for bin in "${bins[@]}"; do commits+=("$(commit_of_binary "$bin")"); done
work=$(mktemp -d /tmp/ringspan-ab-XXXX)
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
bench_flags=()
[[ -n $poll ]] && bench_flags+=(--busy-poll-us "$poll")

for ((round = 1; round <= rounds; round++)); do
  for ((b = 0; b < ${#bins[@]}; b++)); do
    bin=${bins[$b]}
    bench=$(dirname "$bin")/ringspan-bench
    rm -f "$work"/*.key
    key() { "$bin" keygen --out "$work/$1.key" >/dev/null; "$bin" pubkey --key "$work/$1.key"; }
    sender=$(key sender) receiver=$(key receiver)
    declare -A pub=() prt=()
    for ((i = 1; i <= hops; i++)); do pub[$i]=$(key "r$i"); prt[$i]=$(port); done
    for ((i = 1; i <= hops; i++)); do
      allow=()
      ((i == 1)) && allow+=("\"$sender\"")
      # The receiver attaches the mount: its key is granted a router's rights.
      ((i == hops)) && allow+=("{ key = \"$receiver\", role = \"router\" }")
      {
        printf '[node]\nkey = "r%s.key"\nlisten = ["127.0.0.1:%s"]\nworkers = 1\n' "$i" "${prt[$i]}"
        echo "allow = [$(IFS=,; echo "${allow[*]}")]"
        if [[ -n $poll ]]; then printf '\n[limits]\nbusy_poll_us = %s\n' "$poll"; fi
        if ((i > 1)); then printf '\n[[peer]]\nkey = "%s"\n' "${pub[$((i - 1))]}"; fi
        if ((i < hops)); then
          printf '\n[[peer]]\nkey = "%s"\naddress = "127.0.0.1:%s"\n' "${pub[$((i + 1))]}" "${prt[$((i + 1))]}"
        fi
      } > "$work/r$i.toml"
      "$bin" run --config "$work/r$i.toml" 2>/dev/null &
      pids+=($!)
    done
    "$bench" hops receive --relay "127.0.0.1:${prt[$hops]}" --relay-key "${pub[$hops]}" \
      --key "$work/receiver.key" "${bench_flags[@]}" >/dev/null 2>&1 &
    pids+=($!)
    relays=("${pids[@]:0:hops}")
    out=$("$bench" hops send --relay "127.0.0.1:${prt[1]}" --relay-key "${pub[1]}" \
      --key "$work/sender.key" --mode "$mode" --size "$size" --seconds "$seconds" --warmup 1 \
      --json "${bench_flags[@]}" ${window:+--window-bytes "$window"} 2>/dev/null)
    # utime + stime of every relay, in clock ticks.
    ticks=0
    for p in "${relays[@]}"; do
      ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    python3 -c '
import json, sys
r = json.loads(sys.argv[2])
rate = r.get("msgs_per_sec")
cpu_us = int(sys.argv[4]) * 1e6 / int(sys.argv[5]) / int(sys.argv[6])
if rate is not None:
    print("%s  %.0f msgs/s  relay %.3f us/msg/hop  %s" % (sys.argv[1], rate,
          cpu_us / max(r["sent"], 1), sys.argv[3]))
else:
    print("%s  p50 %s / p99 %s / p99.9 %s us  %s" % (sys.argv[1], r["p50_us"], r["p99_us"],
                                                   r["p999_us"], sys.argv[3]))
' "$bin" "$out" "$(stamp_text "${commits[$b]}")" "$ticks" "$(getconf CLK_TCK)" "$hops"
    stop_all
  done
done

#!/usr/bin/env bash
# Small messages and latency through 1 and 2 relay hops, the ringspan side of the NATS
# comparison (publisher -> server -> subscriber, and publisher -> leafnode -> hub -> subscriber):
#
#   1 hop:   ringspan-bench hops send -> relay r1 <- ringspan-bench hops receive
#   2 hops:  ringspan-bench hops send -> relay r1 -> relay r2 <- ringspan-bench hops receive
#
# The relays are `ringspan run` processes on loopback (one worker each, not pinned); the sender
# and the receiver are `ringspan-bench hops`, each a node on one engine worker. Measures one-way
# msgs/s at 16, 128 and 1024 B (counted by the receiver over its measured window), bulk GB/s of
# 65,504-byte messages (the largest one record holds; payload bytes), and round trips
# at 16 B, one at a time: `rtt` = a one-shot transaction per request (CREATE|DELETE, answered
# with DELETE), `rtt_stream` = request and reply messages inside one long-lived transaction.
# Writes perf/results/hops.csv (the stamp's date,commit,cpu,avx512,vaes, then
# scenario,hops,size,value,unit; perf/lib.sh) and prints a table.
#
#   perf/hops.sh            5 s per measurement (after 1 s of warm-up)
#   perf/hops.sh --quick    1 s per measurement (0.3 s warm-up): under a minute
#   perf/hops.sh --pin      also pins the sender to core 0 and the receiver to core 1
#
# HOPS_BUSY_POLL_US=N sets every process's busy poll (the relays' `busy_poll_us`, the bench's
# --busy-poll-us; default: the built-in 100 µs, 0 = sleep at once).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${HOPS_SECONDS:-5}
warmup=1
pin=0
for arg in "$@"; do
  case $arg in
    --quick) seconds=1; warmup=0.3 ;;
    --pin) pin=1 ;;
    *) echo "usage: $0 [--quick] [--pin]" >&2; exit 2 ;;
  esac
done
source perf/lib.sh
echo "building release ..." >&2
cargo build --release --quiet
commit=$(commit_of_tree)
bin=$release/ringspan
bench=$release/ringspan-bench
work=$(mktemp -d /tmp/ringspan-hops-XXXX)
cleanup() {
  local status=$?
  stop_all
  if ((status == 0)); then rm -rf "$work"; else echo "failed: configs and logs kept in $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

key() { "$bin" keygen --out "$work/$1.key" >/dev/null; "$bin" pubkey --key "$work/$1.key"; }
field() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(*(r[f] for f in sys.argv[2:]))' "$@"; }

mkdir -p perf/results
csv=perf/results/hops.csv
echo "$stamp_header,scenario,hops,size,value,unit" > "$csv"
rows=()
send_pin=() recv_pin=()
if ((pin)); then send_pin=(--core 0); recv_pin=(--core 1); fi
mount=0x1:0x10

for hops in 1 2; do
  # Relays r1..rN; r1 dials r2. The sender may connect to r1, the receiver to rN.
  declare -A pub=() prt=()
  for n in sender receiver; do pub[$n]=$(key "$n-$hops"); done
  for ((i = 1; i <= hops; i++)); do pub[r$i]=$(key "r$i-$hops"); prt[r$i]=$(port); done
  for ((i = 1; i <= hops; i++)); do
    allow=()
    ((i == 1)) && allow+=("\"${pub[sender]}\"")
    # The receiver attaches the mount: its key is granted a router's rights.
    ((i == hops)) && allow+=("{ key = \"${pub[receiver]}\", role = \"router\" }")
    {
      echo "[node]"; echo "key = \"r$i-$hops.key\""; echo "listen = [\"127.0.0.1:${prt[r$i]}\"]"
      echo "workers = 1"
      echo "allow = [$(IFS=,; echo "${allow[*]}")]"
      if [[ -n ${HOPS_BUSY_POLL_US:-} ]]; then printf '\n[limits]\nbusy_poll_us = %s\n' "$HOPS_BUSY_POLL_US"; fi
      if ((i > 1)); then printf '\n[[peer]]\nkey = "%s"\n' "${pub[r$((i - 1))]}"; fi
      if ((i < hops)); then
        printf '\n[[peer]]\nkey = "%s"\naddress = "127.0.0.1:%s"\n' "${pub[r$((i + 1))]}" "${prt[r$((i + 1))]}"
      fi
    } > "$work/r$i-$hops.toml"
    "$bin" run --config "$work/r$i-$hops.toml" 2>>"$work/r$i-$hops.log" &
    pids+=($!)
  done
  last=r$hops
  "$bench" hops receive --relay "127.0.0.1:${prt[$last]}" --relay-key "${pub[$last]}" \
    --key "$work/receiver-$hops.key" --mount "$mount" "${recv_pin[@]}" \
    ${HOPS_BUSY_POLL_US:+--busy-poll-us "$HOPS_BUSY_POLL_US"} \
    >"$work/receiver-$hops.out" 2>>"$work/receiver-$hops.log" &
  pids+=($!)
  send() {
    "$bench" hops send --relay "127.0.0.1:${prt[r1]}" --relay-key "${pub[r1]}" \
      --key "$work/sender-$hops.key" --mount "$mount" --seconds "$seconds" --warmup "$warmup" \
      --json "${send_pin[@]}" ${HOPS_WINDOW:+--window-bytes "$HOPS_WINDOW"} \
      ${HOPS_BUSY_POLL_US:+--busy-poll-us "$HOPS_BUSY_POLL_US"} "$@"
  }
  label="$hops hop"; ((hops > 1)) && label+="s"
  for size in 16 128 1024; do
    echo "  [${SECONDS}s] $label: one-way $size B ..." >&2
    out=$(send --mode one-way --size "$size")
    read -r rate sent received ooo < <(field "$out" msgs_per_sec sent received out_of_order)
    rate=$(printf '%.0f' "$rate")
    rows+=("$(printf '%-6s %-20s %6s %14s %s' "$hops" "one-way msgs/s" "$size" "$rate" "(sent $sent, received $received, out of order $ooo)")")
    echo "$(stamp "$commit"),msgs_per_sec,$hops,$size,$rate,msg/s" >> "$csv"
  done
  # Bulk: the largest message a record holds, one-way; payload bytes per second.
  echo "  [${SECONDS}s] $label: one-way 65,504 B (bulk) ..." >&2
  out=$(send --mode one-way --size 65504)
  read -r rate sent received < <(field "$out" msgs_per_sec sent received)
  gbps=$(python3 -c "print(round($rate * 65504 / 1e9, 3))")
  rows+=("$(printf '%-6s %-20s %6s %14s %s' "$hops" "bulk GB/s" 65504 "$gbps" "(sent $sent, received $received)")")
  echo "$(stamp "$commit"),bulk_gbps,$hops,65504,$gbps,GB/s" >> "$csv"
  for mode in rtt rtt-stream; do
    echo "  [${SECONDS}s] $label: $mode 16 B ..." >&2
    out=$(send --mode "$mode" --size 16)
    # shellcheck disable=SC2034 # p50, p99, p999: read below as ${!q}
    read -r p50 p99 p999 n < <(field "$out" p50_us p99_us p999_us samples)
    name=${mode//-/_}
    for q in p50 p99 p999; do
      v=${!q}
      rows+=("$(printf '%-6s %-20s %6s %14.1f %s' "$hops" "$name $q µs" 16 "$v" "($n samples)")")
      echo "$(stamp "$commit"),${name}_${q}_us,$hops,16,$v,us" >> "$csv"
    done
  done
  stop_all
  if [[ -s "$work/receiver-$hops.out" ]]; then
    echo "  [${SECONDS}s] $label: receiver saw $(wc -l < "$work/receiver-$hops.out") streams end" >&2
  fi
done

printf '\n%-6s %-20s %6s %14s\n' hops scenario size value
printf '%s\n' "${rows[@]}"
stamp_text "$commit"
echo "wrote $csv"

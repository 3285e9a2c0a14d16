#!/usr/bin/env bash
# Calls through a real cluster of `ringspan run` processes on loopback: a client node, an entry
# node, 0–2 relays, and a node with an echo master mount. For each hop count, request-reply at
# concurrency 1 (round-trip latency) and 64 (throughput), with `ringspan call`.
# Writes perf/results/relay.csv (each row stamped with date, commit and CPU: perf/lib.sh) and
# prints a table.
#
#   perf/relay.sh            20,000 calls per measurement
#   perf/relay.sh --quick    3,000 calls per measurement
set -euo pipefail
cd "$(dirname "$0")/.."
calls=20000
[[ "${1:-}" == "--quick" ]] && calls=3000
source perf/lib.sh
cargo build --release --quiet
commit=$(commit_of_tree)
bin=$release/ringspan
work=$(mktemp -d /tmp/ringspan-relay-XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
key() { "$bin" keygen --out "$work/$1.key"; "$bin" pubkey --key "$work/$1.key"; }

mkdir -p perf/results
csv=perf/results/relay.csv
echo "$stamp_header,relays,concurrency,calls,completed,calls_per_second,rtt_p50_us,rtt_p99_us" > "$csv"
printf '%-7s %-12s %10s %12s %10s %10s\n' relays concurrency completed calls/s p50_us p99_us
for relays in 0 1 2; do
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
  # Chain: entry -> r1 .. rN -> master; each dials the next.
  names=(entry)
  for ((i = 1; i <= relays; i++)); do names+=("r$i"); done
  names+=(master)
  declare -A pub=() prt=()
  for n in "${names[@]}" client; do pub[$n]=$(key "$n-$relays"); prt[$n]=$(port); done
  for ((i = 0; i < ${#names[@]}; i++)); do
    n=${names[$i]}
    {
      echo "[node]"; echo "key = \"$n-$relays.key\""; echo "listen = [\"127.0.0.1:${prt[$n]}\"]"
      [[ $n == entry ]] && echo "allow = [\"${pub[client]}\"]"
      if ((i > 0)); then prev=${names[$((i - 1))]}; printf '\n[[peer]]\nkey = "%s"\n' "${pub[$prev]}"; fi
      if ((i + 1 < ${#names[@]})); then next=${names[$((i + 1))]}
        printf '\n[[peer]]\nkey = "%s"\naddress = "127.0.0.1:%s"\n' "${pub[$next]}" "${prt[$next]}"; fi
      [[ $n == master ]] && printf '\n[[mount]]\ncluster = "0x1"\nid = "0x10"\nkind = "master"\nservice = "echo"\n'
    } > "$work/$n-$relays.toml"
    "$bin" run --config "$work/$n-$relays.toml" 2>>"$work/$n-$relays.log" &
    pids+=($!)
  done
  printf '[node]\nkey = "client-%s.key"\nrole = "client"\n\n[[peer]]\nkey = "%s"\naddress = "127.0.0.1:%s"\n' \
    "$relays" "${pub[entry]}" "${prt[entry]}" > "$work/client-$relays.toml"
  for conc in 1 64; do
    out=$("$bin" call --config "$work/client-$relays.toml" --mount 0x1:0x10 --calls "$calls" \
      --concurrency "$conc" --size 16)
    read -r completed cps p50 p99 < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["completed"], round(r["calls_per_second"]), r["rtt_p50_us"], r["rtt_p99_us"])' "$out")
    printf '%-7s %-12s %10s %12s %10s %10s\n' "$relays" "$conc" "$completed" "$cps" "$p50" "$p99"
    echo "$(stamp "$commit"),$relays,$conc,$calls,$completed,$cps,$p50,$p99" >> "$csv"
  done
done
stamp_text "$commit"
echo "wrote $csv"

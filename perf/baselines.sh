#!/usr/bin/env bash
# The baselines ringspan is compared against, measured in one run on loopback with
# `ringspan-bench nats` (Rust, plain blocking TCP):
#   - NATS (nats-server), one server (pub and sub on it) and leaf node -> hub (pub on the leaf,
#     sub on the hub): one-way msgs/s at 16 / 128 / 1024 B, request-reply RTT at 16 B;
#   - plain TCP ping-pong RTT at 16 B (no server);
#   - one TCP stream of 64 KiB writes, direct and through one socat relay.
# "hops" counts the processes between the two ends: 0 direct, 1 one nats-server or socat,
# 2 leaf + hub. Writes perf/results/baselines.csv (the stamp's date,commit,cpu,avx512,vaes, then
# scenario,hops,size,value,unit; perf/lib.sh) and prints a table. Installs nats-server and socat
# with apt-get if missing (skips what it cannot run).
#
#   perf/baselines.sh            3 s per measurement (about 40 s)
#   perf/baselines.sh --quick    1 s per measurement (about 15 s)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=3
for arg in "$@"; do
  case $arg in
    --quick) seconds=1 ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
  esac
done

source perf/lib.sh
missing=()
have nats-server || missing+=(nats-server)
have socat || missing+=(socat)
install_missing "${missing[@]}"
have nats-server || echo "no nats-server: skipping the NATS baselines" >&2
have socat || echo "no socat: skipping the relayed bulk baseline" >&2

cargo build --release --quiet --bin ringspan-bench
commit=$(commit_of_tree)
bench=$release/ringspan-bench
work=$(mktemp -d /tmp/ringspan-baselines-XXXX)
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}
# Waits until file $1 holds a line matching $2.
wait_log() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no \"$2\" in $1:" >&2
  tail -5 "$1" >&2
  return 1
}
# The value of key $1 in the key=value line $2.
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

# How many measurements, for the progress lines.
total=0
have nats-server && total=$((total + 8))
total=$((total + 2))
have socat && total=$((total + 1))
step=0
rows=()
failed=0
row() { rows+=("$1,$2,$3,$4,$5"); stamps+=("$(stamp "$commit")"); }
stamps=()
# Runs one measurement: progress on stderr, the tool's key=value line in $out.
measure() {
  local what=$1
  shift
  step=$((step + 1))
  printf '[%2d/%d] %s ...\n' "$step" "$total" "$what" >&2
  if ! out=$("$bench" nats "$@" --seconds "$seconds"); then
    echo "        FAILED: $what" >&2
    failed=$((failed + 1))
    return 1
  fi
  echo "        $out" >&2
}
one_way() { # hops pub sub
  local hops=$1 pub=$2 sub=$3
  for size in 16 128 1024; do
    if measure "nats one-way $size B, $hops hop(s)" one-way --server "$pub" --to "$sub" \
      --size "$size"; then
      row "nats one-way" "$hops" "$size" "$(field msgs_per_sec "$out")" "msg/s"
      local sent received
      sent=$(field sent "$out")
      received=$(field received "$out")
      [[ $sent == "$received" ]] || echo "        note: $received of $sent delivered" >&2
    fi
  done
}
rtt_rows() { # scenario hops size
  row "$1 p50" "$2" "$3" "$(field p50_us "$out")" "us"
  row "$1 p99" "$2" "$3" "$(field p99_us "$out")" "us"
  row "$1 p99.9" "$2" "$3" "$(field p999_us "$out")" "us"
}

if have nats-server; then
  # One server: publisher and subscriber (requester and responder) on it.
  p1=$(port)
  nats-server -a 127.0.0.1 -p "$p1" >"$work/single.log" 2>&1 &
  pids+=($!)
  wait_port "$p1"
  one_way 1 "127.0.0.1:$p1" "127.0.0.1:$p1"
  measure "nats request-reply 16 B, 1 hop" rtt --server "127.0.0.1:$p1" --size 16 &&
    rtt_rows "nats rtt" 1 16
  stop_all

  # Leaf node -> hub: publisher (requester) on the leaf, subscriber (responder) on the hub.
  hub=$(port) hub_leaf=$(port) leaf=$(port)
  cat >"$work/hub.conf" <<EOF
listen: "127.0.0.1:$hub"
leafnodes {
  listen: "127.0.0.1:$hub_leaf"
}
EOF
  cat >"$work/leaf.conf" <<EOF
listen: "127.0.0.1:$leaf"
leafnodes {
  remotes = [ { url: "nats-leaf://127.0.0.1:$hub_leaf" } ]
}
EOF
  nats-server -c "$work/hub.conf" >"$work/hub.log" 2>&1 &
  pids+=($!)
  wait_port "$hub_leaf"
  nats-server -c "$work/leaf.conf" >"$work/leaf.log" 2>&1 &
  pids+=($!)
  wait_port "$leaf"
  # The leaf connection is up on both sides; each measurement then warms up until its
  # subscriptions have propagated (a message, or a request, gets through).
  wait_log "$work/hub.log" "Leafnode connection created"
  wait_log "$work/leaf.log" "Leafnode connection created"
  one_way 2 "127.0.0.1:$leaf" "127.0.0.1:$hub"
  measure "nats request-reply 16 B, 2 hops (leaf -> hub)" rtt --server "127.0.0.1:$leaf" \
    --to "127.0.0.1:$hub" --size 16 && rtt_rows "nats rtt" 2 16
  stop_all
fi

measure "plain TCP ping-pong 16 B, direct" tcp-rtt --size 16 && rtt_rows "tcp rtt" 0 16

measure "TCP bulk 64 KiB writes, direct" bulk --size 65536 &&
  row "tcp bulk" 0 65536 "$(field gb_per_sec "$out")" "GB/s"
if have socat; then
  receiver=$(port) relay=$(port)
  # socat relays one connection (then exits); the sender retries until socat listens.
  socat -b65536 "TCP-LISTEN:$relay,bind=127.0.0.1,reuseaddr" "TCP:127.0.0.1:$receiver" \
    2>"$work/socat.log" &
  pids+=($!)
  measure "TCP bulk 64 KiB writes, through socat" bulk --size 65536 \
    --listen "127.0.0.1:$receiver" --server "127.0.0.1:$relay" &&
    row "tcp bulk" 1 65536 "$(field gb_per_sec "$out")" "GB/s"
  stop_all
fi

mkdir -p perf/results
csv=perf/results/baselines.csv
{
  echo "$stamp_header,scenario,hops,size,value,unit"
  for i in "${!rows[@]}"; do echo "${stamps[$i]},${rows[$i]}"; done
} >"$csv"
echo
printf '%-16s %4s %6s %12s %s\n' scenario hops size value unit
for r in "${rows[@]}"; do
  IFS=, read -r scenario hops size value unit <<<"$r"
  printf '%-16s %4s %6s %12s %s\n' "$scenario" "$hops" "$size" "$value" "$unit"
done
stamp_text "$commit"
echo "wrote $csv ($seconds s per measurement; hops: processes between the two ends)"
if ((failed)); then
  echo "$failed measurement(s) failed" >&2
  exit 1
fi

#!/usr/bin/env bash
# Echo calls through a running node's attach socket against the node's in-process mount API,
# in one run (issue 19). A `ringspan run` node (one worker) answers two echo mounts:
#   in-process  0x1:0x10, a configured `service = "echo"` mount its own application answers;
#   socket      0x1:0x20, attached through the node's attach socket by `ringspan-bench attach
#               serve`, an application in a process of its own (the ringspan-attach client).
# Two callers call each, one at a time (concurrency 1: round trips) and pipelined (64 in
# flight: calls/s):
#   socket  `ringspan-bench attach call` through the node's attach socket (an application on
#           the node's host);
#   link    `ringspan call`, a node of its own with the in-process mount API, over an encrypted
#           TCP link (an application embedding ringspan).
# Two such nodes run side by side: `busy` with the node's default busy polling
# (busy_poll_us = 100), `nobusy` with none (0), since applications on the node's host share its
# cores. Every point is measured once per round, the rounds go through both nodes in turn, and
# each ratio (socket mount / in-process mount, same node, caller and concurrency) is the median
# of the rounds' ratios. Beside calls/s and p50/p99 round trips, per call: the node's CPU time
# and wake-ups (voluntary context switches over its threads), the caller's and the serving
# application's reads, writes and wake-ups (one per batch is the target).
# Writes perf/results/attach.csv (stamped: perf/lib.sh) and prints a table.
#
#   perf/attach.sh              3 rounds, 200,000 pipelined and 30,000 one-at-a-time calls
#   perf/attach.sh --quick      1 round, a tenth of the calls
#   perf/attach.sh --rounds N
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 scale=1
while (($#)); do
  case $1 in
    --quick) rounds=1 scale=10 ;;
    --rounds) rounds=$2; shift ;;
    *) echo "usage: perf/attach.sh [--quick] [--rounds N]" >&2; exit 2 ;;
  esac
  shift
done
source perf/lib.sh
cargo build --release --quiet --bin ringspan --bin ringspan-bench
commit=$(commit_of_tree)
bin=$release/ringspan bench=$release/ringspan-bench
work=$(mktemp -d /tmp/ringspan-attach-XXXX)
trap 'stop_all; rm -rf "$work"' EXIT

"$bin" keygen --out "$work/c.key" >/dev/null
c_pub=$("$bin" pubkey --key "$work/c.key")
declare -A node_pid=()

# Starts node $1 with busy_poll_us $2, its echo application attached, and the calling node's
# config for it ($work/c-$1.toml).
start_node() {
  local name=$1 busy=$2 port pub
  "$bin" keygen --out "$work/$name.key" >/dev/null
  pub=$("$bin" pubkey --key "$work/$name.key")
  port=$(port)
  cat > "$work/$name.toml" <<TOML
[node]
key = "$name.key"
listen = ["127.0.0.1:$port"]
workers = 1
attach = "$name-attach.sock"
allow = ["$c_pub"]

[limits]
busy_poll_us = $busy

[[mount]]
cluster = "0x1"
id = "0x10"
kind = "master"
service = "echo"
TOML
  printf '[node]\nkey = "c.key"\nrole = "client"\n\n[[peer]]\nkey = "%s"\naddress = "127.0.0.1:%s"\n' \
    "$pub" "$port" > "$work/c-$name.toml"
  "$bin" run --config "$work/$name.toml" 2>"$work/$name.log" &
  pids+=($!)
  node_pid[$name]=$!
  for _ in $(seq 100); do [[ -S $work/$name-attach.sock ]] && break; sleep 0.1; done
  "$bench" attach serve --socket "$work/$name-attach.sock" --mount 0x1:0x20 >"$work/$name-serve.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q attached "$work/$name-serve.out" 2>/dev/null && break; sleep 0.1; done
  grep -q attached "$work/$name-serve.out" || {
    echo "the echo application did not attach to $name" >&2; cat "$work/$name-serve.out" >&2; exit 1; }
}
start_node busy 100
start_node nobusy 0

# Node $1's CPU ticks and its threads' voluntary context switches so far.
node_usage() {
  local pid=${node_pid[$1]} ticks switches=0 s
  ticks=$(proc_cpu_ticks "$pid")
  for s in /proc/"$pid"/task/*/status; do
    switches=$((switches + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$s")))
  done
  echo "$ticks $switches"
}
hz=$(getconf CLK_TCK)

mkdir -p perf/results
csv=perf/results/attach.csv
echo "$stamp_header,round,node,caller,server,concurrency,calls,completed,calls_per_second,rtt_p50_us,rtt_p99_us,node_cpu_us_per_call,node_wakeups_per_call,caller_reads_per_call,caller_writes_per_call,caller_wakeups_per_call,server_reads_per_call,server_writes_per_call,server_wakeups_per_call" > "$csv"
printf '%-5s %-6s %-6s %-10s %4s %9s %6s %6s %8s %8s %9s %9s\n' round node caller server conc calls/s p50_us p99_us node_us node_wk caller_wk server_wk
for ((round = 1; round <= rounds; round++)); do
  for name in busy nobusy; do
    for conc in 1 64; do
      if ((conc == 1)); then calls=$((30000 / scale)); else calls=$((200000 / scale)); fi
      for caller in socket link; do
        for server in in-process socket; do
          mount=0x1:0x10; [[ $server == socket ]] && mount=0x1:0x20
          read -r t0 w0 < <(node_usage "$name")
          if [[ $caller == socket ]]; then
            stats=(); [[ $server == socket ]] && stats=(--server-stats)
            out=$("$bench" attach call --socket "$work/$name-attach.sock" --mount "$mount" \
              --calls "$calls" --concurrency "$conc" --size 16 "${stats[@]}")
          else
            # The calling node's handshake and route wait fall outside its timed calls but
            # inside the node's usage: a few ms against seconds of calls.
            out=$("$bin" call --config "$work/c-$name.toml" --mount "$mount" --calls "$calls" \
              --concurrency "$conc" --size 16)
          fi
          read -r t1 w1 < <(node_usage "$name")
          row=$(python3 - "$out" "$calls" "$((t1 - t0))" "$((w1 - w0))" "$hz" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); calls = int(sys.argv[2]); ticks, wakeups, hz = map(int, sys.argv[3:])
f = lambda k: "" if r.get(k) is None else "%.4f" % r[k]
print(",".join([str(r["completed"]), "%.0f" % r["calls_per_second"], str(r["rtt_p50_us"]),
    str(r["rtt_p99_us"]), "%.2f" % (ticks * 1e6 / hz / calls), "%.4f" % (wakeups / calls),
    f("reads_per_call"), f("writes_per_call"), f("wakeups_per_call"),
    f("server_reads_per_call"), f("server_writes_per_call"), f("server_wakeups_per_call")]))
PY
)
          echo "$(stamp "$commit"),$round,$name,$caller,$server,$conc,$calls,$row" >> "$csv"
          IFS=, read -r _ cps p50 p99 node_us node_wk _ _ caller_wk _ _ server_wk <<< "$row"
          printf '%-5s %-6s %-6s %-10s %4s %9s %6s %6s %8s %8s %9s %9s\n' "$round" "$name" "$caller" \
            "$server" "$conc" "$cps" "$p50" "$p99" "$node_us" "$node_wk" "${caller_wk:--}" "${server_wk:--}"
        done
      done
    done
  done
done

python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("\nmedians over rounds; ratio = socket mount / in-process mount (same node, caller, concurrency),")
print("the median of the rounds' ratios, and the rounds' own")
print("%-6s %-6s %4s %12s %10s %6s %-22s %12s %12s" % ("node", "caller", "conc", "in-process/s", "socket/s", "ratio", "rounds", "p50/p99 in-p", "p50/p99 sock"))
for node in ("busy", "nobusy"):
    for caller in ("socket", "link"):
        for conc in ("1", "64"):
            pick = lambda server: [r for r in rows if r["node"] == node and r["caller"] == caller
                                   and r["concurrency"] == conc and r["server"] == server]
            inp, sock = pick("in-process"), pick("socket")
            ratios = [float(s["calls_per_second"]) / float(i["calls_per_second"])
                      for i, s in zip(inp, sock) if float(i["calls_per_second"]) > 0]
            cps = lambda rs: med([float(r["calls_per_second"]) for r in rs])
            lat = lambda rs: "%d/%d" % (med([int(r["rtt_p50_us"]) for r in rs]), med([int(r["rtt_p99_us"]) for r in rs]))
            print("%-6s %-6s %4s %12.0f %10.0f %6.2f %-22s %12s %12s" % (node, caller, conc, cps(inp), cps(sock), med(ratios),
                  " ".join("%.2f" % x for x in ratios), lat(inp), lat(sock)))
pipelined = [r for r in rows if r["caller"] == "socket" and r["server"] == "socket" and r["concurrency"] == "64"]
batch = med([1 / float(r["server_reads_per_call"]) for r in pipelined if float(r["server_reads_per_call"] or 0) > 0])
wake = med([float(r["server_wakeups_per_call"]) / float(r["server_reads_per_call"]) for r in pipelined if float(r["server_reads_per_call"] or 0) > 0])
print("\nserving application, pipelined: %.1f calls per read (batch), %.2f wake-ups per batch (target: at most 1)" % (batch, wake))
PY
stamp_text "$commit"
echo "wrote $csv"

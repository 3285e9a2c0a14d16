#!/usr/bin/env bash
# How a node scales over its engine workers (`[node] workers = W`, one plane per worker, joined
# by internal links over lanes): rounds alternating worker counts, medians reported.
#
# Relay: one `ringspan run` relay with W workers on loopback, and F independent flows through it,
# each its own mount and its own pair of processes (as perf/hops.sh at 1 hop):
#
#   flow f:  ringspan-bench hops send --mount 0x1:0x(10+f) -> relay (W workers)
#                                                           <- ringspan-bench hops receive
#
# The same F flows at every W (default F = 2 x the largest W), sending one-way messages of
# --size bytes for --seconds after --warmup. Per run: msgs/s (the sum of the receivers' rates,
# each over its own measured window), the slowest and fastest flow, the relay's CPU time (user +
# system of the whole process from /proc/PID/stat, from just before the senders start until the
# last has ended) over the messages relayed (the sum of what the senders sent; each sender fails
# unless every message arrived once, in order) as CPU-seconds per million messages, each
# worker's CPU (its thread, ringspan-wN), where the links landed (per worker: receivers' links
# and senders' links), and the cross-worker share: from the relay's snapshot at the end of the
# run (`ringspan show --json`), the bytes its workers handed each other through lanes over the
# bytes they received from sockets, sum(internal_bytes_in) / sum(bytes_in). Each relayed record
# arrives from a socket once and crosses to another worker at most once (one relay), so this is
# the share of the relayed traffic, by wire bytes, that crossed a lane (0 at one worker); each
# run's stderr line checks it by messages: what the workers received (sockets and lanes) beyond
# what was sent, over what was sent. Against one worker: the throughput ratio, the efficiency
# against linear, rate_W / (W x rate_1), and the CPU per message ratio, each a median of the
# rounds' own ratios; and, as the share crossing changes from run to run, a straight line
# through the rounds' (share, CPU per message ratio): the ratio with nothing crossing and with
# everything crossing (with 3 rounds or more whose shares spread over 0.2 or more).
#
# Handshakes: a satellite with W workers (role satellite, `accept_unknown_keys = true`,
# `client_clusters`: its W planes keep one client directory), and K `ringspan-bench clients` loads opening --clients links in all, each
# link under a key of its own, as fast as the node takes them (admission wide open), each link
# one Noise XX handshake and a client's hello. Over the dialling (from before the loads start
# until every load holds its links up): the node's CPU (process, and per worker thread), the
# handshakes completed (sum of the workers' `established` in the snapshot) and the loads' own
# handshakes/s. Node CPU per handshake, handshakes per node CPU-second, and the capacity at W
# workers: W / (node CPU per handshake), the handshakes a second W busy cores would complete;
# beside it, bounded by the busiest worker (handshakes / the most CPU one worker spent), which
# is lower when the kernel gave the workers unequal shares of the connections. At W = 1, 2 and
# the largest W.
#
# On a machine with few cores the load generators (2 processes per flow, K loads) share the
# cores with the relay: throughput then says how fast the machine goes, not the relay, and the
# figures to read are the CPU per relayed message at W against 1 (target at 2 workers: within
# 10%) and the handshake capacity at W against 1 (target at 2 workers: >= 1.8x). With --pin (on
# a machine with more cores than the largest W) the relay runs on cores 0..W-1 and the loads on
# the rest, for the scaling curve of the relay itself.
#
# Writes perf/results/cores.csv (rewritten: one row per run, perf/lib.sh's stamp first; columns
# in perf/README.md), prints a summary (medians, ratios, targets) and the stamp, and plots
# perf/results/cores.svg with gnuplot if it is there (installed with apt-get under CI=true or
# --install). Progress and each run's figures go to stderr. Exits non-zero, saying why, when a
# process fails: a relay or node that dies or reports fewer workers than configured, a flow that
# delivers nothing or loses a message, a client load that ends before its links are up. Needs
# python3.
#
#   perf/cores.sh [--quick] [--rounds R] [--max-workers N] [--workers "1 2 4"] [--flows F]
#                 [--size B] [--seconds S] [--warmup S] [--busy-poll-us U] [--clients C]
#                 [--loads K] [--dial-rate R] [--pin] [--no-relay] [--no-handshakes] [--install]
#
#   --quick           1 round, 1 s per flow run after 0.3 s of warm-up, 1,500 clients
#   --rounds R        rounds (default 3); each runs every worker count, in turn forwards and
#                     backwards, so that a drift of the host cancels
#   --max-workers N   the largest W (default: nproc)
#   --workers LIST    the relay's worker counts (default 1..N, or 1 2 4 ... N past 8)
#   --flows F         flows at every W (default 2 x N)
#   --size B          payload bytes per message (default 128)
#   --seconds S       measured seconds per flow run (default 3; warm-up 1, --warmup)
#   --busy-poll-us U  every process's busy poll (relay's and node's busy_poll_us, the bench's
#                     --busy-poll-us): default 0, so that no CPU time is spinning; 100 is the
#                     engine's default
#   --clients C       client links per handshake run (default 6,000)
#   --loads K         client loads per handshake run (default N), C/K links each
#   --dial-rate R     dials a second, all loads together (default 10,000: faster than the
#                     loads complete handshakes here, so links queue at the node)
#   --pin             relay on cores 0..W-1, every load generator on cores N..nproc-1
#   --no-relay, --no-handshakes   leave that part out
#   --install         install gnuplot (gnuplot-nox) with apt-get if missing (as CI=true does)
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/lib.sh

usage() { echo "usage: see the header of $0" >&2; exit 2; }
quick=0 rounds="" max_workers="" workers_list="" flows="" size=128 seconds="" warmup=""
poll=0 clients="" loads="" hs_rate=10000 pin=0 do_relay=1 do_hs=1 install=0
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --rounds) rounds=${2-}; shift ;;
    --max-workers) max_workers=${2-}; shift ;;
    --workers) workers_list=${2-}; shift ;;
    --flows) flows=${2-}; shift ;;
    --size) size=${2-}; shift ;;
    --seconds) seconds=${2-}; shift ;;
    --warmup) warmup=${2-}; shift ;;
    --busy-poll-us) poll=${2-}; shift ;;
    --clients) clients=${2-}; shift ;;
    --loads) loads=${2-}; shift ;;
    --dial-rate) hs_rate=${2-}; shift ;;
    --pin) pin=1 ;;
    --no-relay) do_relay=0 ;;
    --no-handshakes) do_hs=0 ;;
    --install) install=1 ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
  shift
done
if ((quick)); then
  rounds=${rounds:-1} seconds=${seconds:-1} warmup=${warmup:-0.3} clients=${clients:-1500}
fi
rounds=${rounds:-3} seconds=${seconds:-3} warmup=${warmup:-1} clients=${clients:-6000}
cores=$(nproc)
max_workers=${max_workers:-$cores}
flows=${flows:-$((2 * max_workers))}
loads=${loads:-$max_workers}
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$1 must be a positive integer (got \"$2\")" >&2; exit 2; }; }
seconds_ok() { [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "$1 must be a number of seconds (got \"$2\")" >&2; exit 2; }; }
positive --rounds "$rounds"
positive --max-workers "$max_workers"
positive --flows "$flows"
positive --size "$size"
positive --clients "$clients"
positive --loads "$loads"
positive --dial-rate "$hs_rate"
seconds_ok --seconds "$seconds"
seconds_ok --warmup "$warmup"
[[ $poll =~ ^[0-9]+$ ]] || { echo "--busy-poll-us must be 0 or more microseconds" >&2; exit 2; }
((max_workers <= 256)) || { echo "--max-workers: a node has at most 256 workers" >&2; exit 2; }
((clients >= loads)) || { echo "--clients must be at least --loads" >&2; exit 2; }
((do_relay || do_hs)) || { echo "--no-relay and --no-handshakes: nothing to measure" >&2; exit 2; }

# The relay's worker counts: 1..N, or from 8 workers on 1 2 4 8 ... and N.
if [[ -z $workers_list ]]; then
  if ((max_workers <= 8)); then
    workers_list=$(seq 1 "$max_workers")
  else
    workers_list=$(for ((w = 1; w < max_workers; w *= 2)); do echo "$w"; done; echo "$max_workers")
  fi
fi
read -r -a relay_workers <<< "$(tr ',' ' ' <<< "$workers_list" | tr '\n' ' ')"
for w in "${relay_workers[@]}"; do
  positive "--workers entry" "$w"
  ((w <= max_workers)) || { echo "--workers: $w is above --max-workers $max_workers" >&2; exit 2; }
done
# The handshake runs: 1, 2 (the issue's target) and N workers.
hs_workers=(1)
((max_workers >= 2)) && hs_workers+=(2)
((max_workers > 2)) && hs_workers+=("$max_workers")

load_pin=()
if ((pin)); then
  have taskset || { echo "--pin needs taskset (util-linux)" >&2; exit 2; }
  ((cores > max_workers)) || {
    echo "--pin needs more cores than the largest W ($cores cores, W up to $max_workers):" \
      "run it with --max-workers $((cores / 2)) or less" >&2
    exit 2
  }
  load_pin=(taskset -c "$max_workers-$((cores - 1))")
fi
# The handshake node holds every client link open at once.
if ((do_hs)) && ! ulimit -n $((clients + 1024)) 2>/dev/null; then
  echo "perf/cores.sh: $clients client links need $((clients + 1024)) open files, but the hard" \
    "limit is $(ulimit -Hn) and this shell cannot raise it: use --clients $(($(ulimit -Hn) - 1024))" \
    "or less" >&2
  exit 1
fi
if ! have gnuplot && { ((install)) || [[ ${CI:-} == true ]]; }; then
  install_missing gnuplot-nox
fi
have python3 || { echo "perf/cores.sh needs python3" >&2; exit 1; }

echo "building release ..." >&2
cargo build --release --quiet
commit=$(commit_of_tree)
bin=$release/ringspan
bench=$release/ringspan-bench
tck=$(getconf CLK_TCK)
mkdir -p perf/results
csv=perf/results/cores.csv
echo "$stamp_header,part,round,workers,load,size,seconds,rate,flow_min,flow_max,count,node_cpu_s,worker_cpu_s,cpu_per_unit,unit,cross_share,lane_pauses,placement,failed" > "$csv"

work=$(mktemp -d /tmp/ringspan-cores-XXXX)
cleanup() {
  local status=$?
  stop_all
  if ((status == 0)); then rm -rf "$work"; else echo "perf/cores.sh: configs and logs kept in $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "perf/cores.sh: $*" >&2; exit 1; }
# The last lines of log $1, indented, for a failure's message.
tail_of() { echo "--- last lines of $1:"; tail -n 15 "$1" 2>/dev/null | sed 's/^/    /'; }
key() { "$bin" keygen --out "$work/$1.key" >/dev/null; "$bin" pubkey --key "$work/$1.key"; }
mount_of() { printf '0x1:0x%x' $((0x10 + $1)); }
log() { echo "  [${SECONDS}s] $*" >&2; }

# The snapshot of node $1 (pid) over control socket $2 into file $3; fails if the node is gone.
snapshot() {
  running "$1" || return 1
  "$bin" show --json --socket "$2" > "$3" 2>/dev/null
}
# Waits until node $1 (pid; log $3) answers on control socket $2 with its snapshot (until its
# planes are up it answers that it is starting), and checks it runs W = $4
# workers: a node that would run on fewer (a client-serving one) says so in its log and reports
# fewer rows.
node_ready() {
  local pid=$1 sock=$2 logf=$3 want=$4 got=""
  for _ in $(seq 100); do
    running "$pid" || fail "the node (pid $pid) exited at start$(echo; tail_of "$logf")"
    if snapshot "$pid" "$sock" "$work/ready.json"; then
      got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(len(s.get("workers", [])) if s.get("node") else "")' \
        "$work/ready.json")
      [[ -n $got ]] && break
    fi
    sleep 0.1
  done
  [[ -n $got ]] || fail "the node (pid $pid) does not answer with its snapshot on $sock after 10 s"
  ((got == want)) || fail "the node was configured with $want workers but runs $got$(echo; tail_of "$logf")"
}
# Ends the processes started for one run.
end_run() { stop_all; }

# Keys, made once: the relay's (also the handshake node's) and each flow's two ends.
relay_pub=$(key relay)
allow=()
for ((f = 0; f < flows; f++)); do
  sender_pub=$(key "sender$f") receiver_pub=$(key "receiver$f")
  # A sender is a client (a bare key); a receiver attaches its mount: a router's rights.
  allow+=("\"$sender_pub\"" "{ key = \"$receiver_pub\", role = \"router\" }")
done

# One relay run: round $1, W = $2 workers. Appends a row to the CSV.
relay_run() {
  local round=$1 w=$2 dir=$work/relay-r$1-w$2 rport relay f c0 c1 t0 t1 status
  local -a senders=()
  mkdir -p "$dir"
  rport=$(port)
  {
    printf '[node]\nkey = "%s"\nlisten = ["127.0.0.1:%s"]\nworkers = %s\ncontrol = "%s"\n' \
      "$work/relay.key" "$rport" "$w" "$dir/relay.sock"
    echo "allow = [$(IFS=,; echo "${allow[*]}")]"
    printf '\n[limits]\nbusy_poll_us = %s\n' "$poll"
  } > "$dir/relay.toml"
  local -a pin_relay=()
  ((pin)) && pin_relay=(taskset -c "0-$((w - 1))")
  "${pin_relay[@]}" "$bin" run --config "$dir/relay.toml" 2> "$dir/relay.log" &
  relay=$!
  pids+=("$relay")
  node_ready "$relay" "$dir/relay.sock" "$dir/relay.log" "$w"
  for ((f = 0; f < flows; f++)); do
    "${load_pin[@]}" "$bench" hops receive --relay "127.0.0.1:$rport" --relay-key "$relay_pub" \
      --key "$work/receiver$f.key" --mount "$(mount_of "$f")" --busy-poll-us "$poll" \
      > "$dir/receiver$f.out" 2> "$dir/receiver$f.log" &
    pids+=($!)
  done
  # Every receiver's mount routed through the relay before any sender starts.
  local routes=0
  for _ in $(seq 100); do
    snapshot "$relay" "$dir/relay.sock" "$dir/routes.json" ||
      fail "the relay ($w workers) died while the receivers attached$(echo; tail_of "$dir/relay.log")"
    routes=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["routes"]))' "$dir/routes.json")
    ((routes >= flows)) && break
    sleep 0.1
  done
  ((routes >= flows)) ||
    fail "after 10 s the relay ($w workers) routes $routes of $flows receivers' mounts$(echo; tail_of "$dir/receiver0.log")"
  c0=$(proc_cpu_ticks "$relay") || fail "the relay ($w workers) died$(echo; tail_of "$dir/relay.log")"
  t0=$(thread_cpu_ticks "$relay")
  for ((f = 0; f < flows; f++)); do
    "${load_pin[@]}" "$bench" hops send --relay "127.0.0.1:$rport" --relay-key "$relay_pub" \
      --key "$work/sender$f.key" --mount "$(mount_of "$f")" --mode one-way --size "$size" \
      --seconds "$seconds" --warmup "$warmup" --busy-poll-us "$poll" --json \
      > "$dir/sender$f.out" 2> "$dir/sender$f.log" &
    senders+=($!)
    pids+=($!)
  done
  # Where the links landed, once every sender is linked (the senders' links are client links,
  # counted per worker; the receivers' are listed).
  local placement=""
  for _ in $(seq 50); do
    sleep 0.1
    snapshot "$relay" "$dir/relay.sock" "$dir/during.json" || break
    placement=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
if sum(w["clients"] for w in s["workers"]) < int(sys.argv[2]):
    sys.exit(0)
print(" ".join("w%d:%dr%ds" % (w["worker"], sum(1 for l in s["links"] if l["worker"] == w["worker"]),
                               w["clients"]) for w in s["workers"]))' "$dir/during.json" "$flows")
    [[ -n $placement ]] && break
  done
  for ((f = 0; f < flows; f++)); do
    status=0
    wait "${senders[$f]}" || status=$?
    if ((status != 0)); then
      running "$relay" || fail "the relay ($w workers) died during the run$(echo; tail_of "$dir/relay.log")"
      fail "flow $f (mount $(mount_of "$f")) failed with W = $w (exit $status)$(echo; tail_of "$dir/sender$f.log"; tail_of "$dir/receiver$f.log")"
    fi
  done
  running "$relay" || fail "the relay ($w workers) died during the run$(echo; tail_of "$dir/relay.log")"
  c1=$(proc_cpu_ticks "$relay") || fail "the relay ($w workers) died$(echo; tail_of "$dir/relay.log")"
  t1=$(thread_cpu_ticks "$relay")
  snapshot "$relay" "$dir/relay.sock" "$dir/end.json" ||
    fail "the relay ($w workers) did not answer at the end of the run$(echo; tail_of "$dir/relay.log")"
  end_run
  STAMP=$(stamp "$commit") ROUND=$round W=$w FLOWS=$flows SIZE=$size SECONDS_=$seconds \
    CPU_TICKS=$((c1 - c0)) TCK=$tck T0=$t0 T1=$t1 PLACEMENT=${placement:-?} DIR=$dir \
    python3 - >> "$csv" <<'PY'
import json, os, sys
e = os.environ
flows = int(e["FLOWS"])
outs = []
for f in range(flows):
    text = open(f"{e['DIR']}/sender{f}.out").read().strip()
    if not text:
        sys.exit(f"perf/cores.sh: flow {f} printed no outcome (see {e['DIR']}/sender{f}.log)")
    outs.append(json.loads(text))
rates = [o["msgs_per_sec"] for o in outs]
for f, (o, r) in enumerate(zip(outs, rates)):
    if o["received"] == 0 or r <= 0:
        sys.exit(f"perf/cores.sh: flow {f} delivered nothing at W = {e['W']}: {o}")
sent = sum(o["sent"] for o in outs)
cpu = int(e["CPU_TICKS"]) / int(e["TCK"])
def threads(text):
    t = {}
    for line in text.splitlines():
        name, ticks = line.split()
        if name.startswith("ringspan-w"):
            t[name] = int(ticks)
    return t
t0, t1 = threads(e["T0"]), threads(e["T1"])
workers = sorted(t1, key=lambda n: int(n[len("ringspan-w"):]))
per_worker = " ".join("%.2f" % ((t1[n] - t0.get(n, 0)) / int(e["TCK"])) for n in workers)
end = json.load(open(f"{e['DIR']}/end.json"))
socket_in = sum(w["bytes_in"] for w in end["workers"])
lane_in = sum(w["internal_bytes_in"] for w in end["workers"])
cross = lane_in / socket_in if socket_in else 0.0
# A check by messages: what the workers received (from sockets and lanes) beyond the messages
# sent, over those sent: the crossing messages, plus acknowledgements, keepalives, span messages.
beyond = (sum(w["messages_in"] for w in end["workers"]) - sent) / sent
# Times a worker stopped reading its sockets because another lagged behind its hand-offs.
pauses = sum(w.get("lane_pauses", 0) for w in end["workers"])
rate = sum(rates)
per_million = cpu / sent * 1e6
print(f"{e['W']} workers: {rate:,.0f} msgs/s over {flows} flows ({min(rates):,.0f}..{max(rates):,.0f}), "
      f"relay CPU {cpu:.2f} s for {sent:,} messages = {per_million:.3f} s per million, "
      f"workers {per_worker} s, cross-worker {cross:.1%} by bytes ({beyond:.1%} more messages "
      f"received than sent), lane pauses {pauses}, links {e['PLACEMENT']}", file=sys.stderr)
print(f"{e['STAMP']},relay,{e['ROUND']},{e['W']},{flows},{e['SIZE']},{e['SECONDS_']},{rate:.0f},"
      f"{min(rates):.0f},{max(rates):.0f},{sent},{cpu:.3f},{per_worker},{per_million:.4f},"
      f"cpu_s_per_million_msgs,{cross:.4f},{pauses},{e['PLACEMENT']},")
PY
}

# One handshake run: round $1, W = $2 workers. Appends a row to the CSV.
hs_run() {
  local round=$1 w=$2 dir=$work/hs-r$1-w$2 nport node i n c0 c1 t0 t1 status
  local -a tools=()
  mkdir -p "$dir"
  nport=$(port)
  cat > "$dir/node.toml" <<EOF
[node]
key = "$work/relay.key"
listen = ["127.0.0.1:$nport"]
workers = $w
control = "$dir/node.sock"
role = "satellite"
accept_unknown_keys = true
client_clusters = ["0x1"]

[limits]
keepalive_ms = 15000
idle_timeout_ms = 60000
max_handshakes_per_sec = 4294967295
busy_poll_us = $poll
EOF
  local -a pin_node=()
  ((pin)) && pin_node=(taskset -c "0-$((w - 1))")
  "${pin_node[@]}" "$bin" run --config "$dir/node.toml" 2> "$dir/node.log" &
  node=$!
  pids+=("$node")
  node_ready "$node" "$dir/node.sock" "$dir/node.log" "$w"
  c0=$(proc_cpu_ticks "$node") || fail "the node ($w workers) died$(echo; tail_of "$dir/node.log")"
  t0=$(thread_cpu_ticks "$node")
  for ((i = 0; i < loads; i++)); do
    n=$((clients / loads + (i < clients % loads ? 1 : 0)))
    "${load_pin[@]}" "$bench" clients --connect "127.0.0.1:$nport" --peer-key "$relay_pub" \
      --clients "$n" --rate "$(((hs_rate + loads - 1) / loads))" --keepalive-ms 15000 --hold 3 --json \
      > "$dir/load$i.json" 2> "$dir/load$i.log" &
    tools+=($!)
    pids+=($!)
  done
  # Every load holds its links (or has given up on some): the dialling is over.
  for ((i = 0; i < loads; i++)); do
    until grep -qs '^holding' "$dir/load$i.log"; do
      running "$node" || fail "the node ($w workers) died during the handshakes$(echo; tail_of "$dir/node.log")"
      running "${tools[$i]}" || fail "client load $i ended before holding its links$(echo; tail_of "$dir/load$i.log")"
      sleep 0.05
    done
  done
  c1=$(proc_cpu_ticks "$node") || fail "the node ($w workers) died$(echo; tail_of "$dir/node.log")"
  t1=$(thread_cpu_ticks "$node")
  snapshot "$node" "$dir/node.sock" "$dir/end.json" ||
    fail "the node ($w workers) did not answer after the handshakes$(echo; tail_of "$dir/node.log")"
  for ((i = 0; i < loads; i++)); do
    status=0
    wait "${tools[$i]}" || status=$?
    ((status == 0)) || echo "perf/cores.sh: client load $i exited $status: $(grep -m1 holding "$dir/load$i.log")" >&2
  done
  end_run
  STAMP=$(stamp "$commit") ROUND=$round W=$w CLIENTS=$clients LOADS=$loads \
    CPU_TICKS=$((c1 - c0)) TCK=$tck T0=$t0 T1=$t1 DIR=$dir python3 - >> "$csv" <<'PY'
import json, os, sys
e = os.environ
tck = int(e["TCK"])
reports = []
for i in range(int(e["LOADS"])):
    text = open(f"{e['DIR']}/load{i}.json").read().strip()
    reports.append(json.loads(text) if text else {})
end = json.load(open(f"{e['DIR']}/end.json"))
established = sum(w["established"] for w in end["workers"])
if established == 0:
    sys.exit(f"perf/cores.sh: no handshake completed on the node with {e['W']} workers")
failed = sum(r.get("failed", 0) + r.get("lost", 0) for r in reports)
rate = sum(r.get("handshakes_per_sec", 0) for r in reports)
cpu = int(e["CPU_TICKS"]) / tck
def threads(text):
    return {n: int(t) for n, t in (l.split() for l in text.splitlines()) if n.startswith("ringspan-w")}
t0, t1 = threads(e["T0"]), threads(e["T1"])
names = sorted(t1, key=lambda n: int(n[len("ringspan-w"):]))
worker_cpu = [(t1[n] - t0.get(n, 0)) / tck for n in names]
per_worker = " ".join("%.2f" % c for c in worker_cpu)
us_per = cpu / established * 1e6
w = int(e["W"])
capacity = w * established / cpu if cpu else 0.0
busiest = established / max(worker_cpu) if worker_cpu and max(worker_cpu) else 0.0
split = " ".join("w%d:%d" % (r["worker"], r["established"]) for r in end["workers"])
print(f"{w} workers: {established:,} handshakes, {rate:,.0f}/s by the loads, node CPU {cpu:.2f} s = "
      f"{us_per:.0f} us per handshake ({established / cpu if cpu else 0:,.0f} per CPU-second; "
      f"capacity on {w} cores {capacity:,.0f}/s, {busiest:,.0f}/s bound by the busiest worker), "
      f"workers {per_worker} s, split {split}, failed or lost {failed}", file=sys.stderr)
print(f"{e['STAMP']},handshakes,{e['ROUND']},{w},{e['CLIENTS']},,,{rate:.0f},,,{established},"
      f"{cpu:.3f},{per_worker},{us_per:.2f},cpu_us_per_handshake,,,{split},{failed}")
PY
}

for ((round = 1; round <= rounds; round++)); do
  # Forwards in odd rounds, backwards in even ones.
  order=("${relay_workers[@]}") hs_order=("${hs_workers[@]}")
  if ((round % 2 == 0)); then
    mapfile -t order < <(printf '%s\n' "${relay_workers[@]}" | tac)
    mapfile -t hs_order < <(printf '%s\n' "${hs_workers[@]}" | tac)
  fi
  if ((do_relay)); then
    for w in "${order[@]}"; do
      log "round $round/$rounds: relay, $w worker(s), $flows flows of $size B ..."
      relay_run "$round" "$w"
    done
  fi
  if ((do_hs)); then
    for w in "${hs_order[@]}"; do
      log "round $round/$rounds: handshakes, $w worker(s), $clients clients from $loads load(s) ..."
      hs_run "$round" "$w"
    done
  fi
done

# The summary: medians over the rounds; each ratio the median of the rounds' own ratios.
STAMP_TEXT=$(stamp_text "$commit") CSV=$csv CORES=$cores PIN=$pin FLOWS=$flows LOADS=$loads \
  PLOT_DATA="$work/plot.dat" python3 - <<'PY'
import csv, os, statistics
e = os.environ
rows = list(csv.DictReader(open(e["CSV"])))
med = statistics.median
def by(part):
    out = {}
    for r in rows:
        if r["part"] == part:
            out.setdefault(int(r["workers"]), {})[int(r["round"])] = r
    return out
def ratios(runs, w, f):
    # f(run at w) / f(run at 1 worker), each round's own pair, by round.
    return [f(runs[w][k]) / f(runs[1][k]) for k in sorted(runs[w])
            if k in runs.get(1, {}) and f(runs[1][k])]
def ratio(runs, w, f):
    rs = ratios(runs, w, f)
    return med(rs) if rs else None
def listed(xs):
    return " ".join(f"{x:.2f}" for x in xs)
def fmt(x, spec):
    return "-" if x is None else format(x, spec)
verdicts = []
relay = by("relay")
if relay:
    rate = lambda r: float(r["rate"])
    cpu = lambda r: float(r["cpu_per_unit"])
    print(f"relay: {e['FLOWS']} independent flows of {rows[0]['size'] or '?'} B through one relay, "
          f"medians of {max(len(v) for v in relay.values())} round(s)")
    print(f"{'workers':>7} {'msgs/s':>11} {'x 1 worker':>10} {'efficiency':>10} "
          f"{'CPU s/M msgs':>12} {'x 1 worker':>10} {'cross-worker':>12}  flows min..max msgs/s")
    rate_1 = med(rate(r) for r in relay[1].values()) if 1 in relay else None
    with open(e["PLOT_DATA"], "w") as plot:
        for w in sorted(relay):
            runs = relay[w].values()
            m_rate = med(rate(r) for r in runs)
            m_cpu = med(cpu(r) for r in runs)
            m_cross = med(float(r["cross_share"]) for r in runs)
            lo = med(float(r["flow_min"]) for r in runs)
            hi = med(float(r["flow_max"]) for r in runs)
            x = ratio(relay, w, rate) if 1 in relay else None
            eff = x / w if x is not None else None
            c = ratio(relay, w, cpu) if 1 in relay else None
            print(f"{w:>7} {m_rate:>11,.0f} {fmt(x, '>9.2f')}x {fmt(eff, '>10.0%')} "
                  f"{m_cpu:>12.3f} {fmt(c, '>9.2f')}x {m_cross:>12.1%}  {lo:,.0f}..{hi:,.0f}")
            linear = w * rate_1 if rate_1 is not None else "NaN"
            plot.write(f"{w} {m_rate} {m_cpu} {m_cross} {linear}\n")
    # The cost of crossing, apart from that of running on W workers: the share that crosses
    # changes from run to run (the kernel places the links), so over the rounds at W, a straight
    # line by least squares through (cross-worker share, CPU per message / the same round's at
    # 1 worker): its value at 0 is W workers with nothing crossing, at 1 everything crossing.
    # Only with 3 rounds or more whose shares spread over 0.2 or more; noisy on a busy host.
    if 1 in relay:
        for w in sorted(relay):
            if w == 1:
                continue
            pts = [(float(relay[w][k]["cross_share"]), cpu(relay[w][k]) / cpu(relay[1][k]))
                   for k in sorted(relay[w]) if k in relay[1] and cpu(relay[1][k])]
            print(f"  {w} workers, by round: cross-worker share and CPU per message / 1 worker's: "
                  + ", ".join(f"{x:.0%} {y:.2f}x" for x, y in pts))
            xs = [x for x, _ in pts]
            if len(pts) >= 3 and max(xs) - min(xs) >= 0.2:
                mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in pts)
                b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x in xs)
                a = my - b * mx
                print(f"  {w} workers, a line through those rounds: CPU per message / 1 worker's = "
                      f"{a:.2f} + {b:.2f} x share ({a:.2f}x with nothing crossing, "
                      f"{a + b:.2f}x with everything crossing)")
            else:
                print(f"  {w} workers: too few rounds, or shares too close, to tell the cost of "
                      "crossing from that of the workers (3 rounds or more spread over 0.2 or "
                      "more)")
    if 2 in relay and 1 in relay:
        rs = ratios(relay, 2, cpu)
        c = med(rs)
        verdicts.append(f"relay CPU per message, 2 workers / 1: {c:.2f}x (target <= 1.10x: "
                        f"{'met' if c <= 1.10 else 'NOT met'}; rounds {listed(rs)})")
    print()
hs = by("handshakes")
if hs:
    per_cpu = lambda r: int(r["count"]) / float(r["node_cpu_s"]) if float(r["node_cpu_s"]) else 0.0
    capacity = lambda r: int(r["workers"]) * per_cpu(r)
    def busiest(r):
        cpus = [float(x) for x in r["worker_cpu_s"].split()]
        return int(r["count"]) / max(cpus) if cpus and max(cpus) else 0.0
    print(f"handshakes: {rows[-1]['load']} client links from {e['LOADS']} load(s), each a Noise XX "
          f"handshake and a client's hello; medians of {max(len(v) for v in hs.values())} round(s)")
    print(f"{'workers':>7} {'hs/s (loads)':>12} {'CPU us/hs':>9} {'hs/CPU-s':>9} "
          f"{'capacity/s':>10} {'x 1 worker':>10} {'busiest-bound/s':>15}  split (last round)")
    for w in sorted(hs):
        runs = list(hs[w].values())
        x = ratio(hs, w, capacity) if 1 in hs else None
        print(f"{w:>7} {med(float(r['rate']) for r in runs):>12,.0f} "
              f"{med(float(r['cpu_per_unit']) for r in runs):>9.0f} "
              f"{med(per_cpu(r) for r in runs):>9,.0f} {med(capacity(r) for r in runs):>10,.0f} "
              f"{fmt(x, '>9.2f')}x {med(busiest(r) for r in runs):>15,.0f}  {runs[-1]['placement']}")
    if 2 in hs and 1 in hs:
        rs = ratios(hs, 2, capacity)
        x = med(rs)
        b = ratio(hs, 2, busiest)
        verdicts.append(f"handshake capacity, 2 workers / 1: {x:.2f}x by node CPU per handshake "
                        f"(target >= 1.8x: {'met' if x >= 1.8 else 'NOT met'}; rounds {listed(rs)}); "
                        f"{b:.2f}x bound by the busiest worker")
    failed = sum(int(r["failed"] or 0) for r in rows if r["part"] == "handshakes")
    if failed:
        print(f"note: {failed} dials failed or links were lost (their CPU is in the node's; "
              "see the stderr lines)")
    print()
for v in verdicts:
    print(v)
if relay and e["PIN"] != "1" and int(e["CORES"]) < max(relay) + 2 * int(e["FLOWS"]):
    print(f"note: {e['CORES']} cores for the relay and {2 * int(e['FLOWS'])} load processes: the "
          "loads share the relay's cores, so msgs/s and efficiency say how fast this machine "
          "goes, not the relay; read the CPU per message")
print(e["STAMP_TEXT"])
PY

if have gnuplot && [[ -s $work/plot.dat ]] && (($(wc -l < "$work/plot.dat") >= 2)); then
  gnuplot <<EOF
set terminal svg size 960,420 font "sans,11"
set output "perf/results/cores.svg"
set multiplot layout 1,2 title "ringspan relay over W workers, $flows flows ($(stamp_text "$commit" | sed 's/"//g'))" font ",10"
set xlabel "workers"
set xtics 1
set grid
set key top left
set ylabel "msgs/s"
set format y "%.1s%c"
set yrange [0:*]
plot "$work/plot.dat" using 1:2 with linespoints lw 2 title "measured (median)", \
     "$work/plot.dat" using 1:5 with lines dt 2 title "linear from 1 worker"
set ylabel "relay CPU-seconds per million messages"
set format y "%g"
set y2label "cross-worker share"
set y2range [0:1]
set y2tics
plot "$work/plot.dat" using 1:3 with linespoints lw 2 title "CPU s / M msgs", \
     "$work/plot.dat" using 1:4 axes x1y2 with linespoints dt 3 title "cross-worker share"
unset multiplot
EOF
  echo "wrote $csv and perf/results/cores.svg"
else
  if ! have gnuplot; then
    echo "no gnuplot: no plot (--install, or CI=true, installs gnuplot-nox)" >&2
  elif [[ -s $work/plot.dat ]]; then
    echo "one worker count: no plot" >&2
  fi
  echo "wrote $csv"
fi

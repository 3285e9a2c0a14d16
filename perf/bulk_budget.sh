#!/usr/bin/env bash
# Can bulk 64 KiB through 1 relay hop reach 1.0x a socat relay on this machine at all? The CPU
# budget of both pipelines, measured side by side in one run, rounds alternating:
#
#   socat:    ringspan-bench nats bulk sender thread -> socat -b65536 -> its receiver thread
#             (65,536-byte writes, plain TCP: perf/baselines.sh's relayed bulk)
#   ringspan: ringspan-bench hops send -> ringspan run r1 <- ringspan-bench hops receive
#             (65,504-byte messages one-way, AES-256-GCM on every link: perf/hops.sh's bulk;
#             busy polling off everywhere, as perf/ab.sh --busy-poll-us 0)
#
# Over a window of S seconds in steady state (it opens 0.5 s after the first megabyte reaches the
# receiver), for each process: user + system CPU time (utime + stime from /proc/PID/stat, clock
# ticks of getconf CLK_TCK; the socat pipeline's sender and receiver are two threads of one
# process, read from /proc/PID/task/TID/stat), and as a check the scheduler's run time
# (schedstat, ns, summed over the threads); the ksoftirqd threads' time too (machine-wide:
# network work the kernel deferred out of the processes' own time), and how busy the whole
# machine was (/proc/stat: the cores the pipeline used, and the cores everything else used).
# Messages moved = the bytes the receiver's socket took in over the window (ss's
# bytes_received) / the wire bytes of one message (65,536 for socat; for ringspan the receiver
# socket's bytes over the whole run / the messages it received: 65,560, one record each).
#
# Then the arithmetic: with C cores (nproc), a pipeline whose processes together spend T µs of
# CPU per message moves at most C x payload / T. Ringspan's ceiling over socat's measured
# throughput is the best ratio reachable here: a ceiling, not a measurement (it assumes ringspan
# keeps every core busy, with no one else on the machine, and its cost per message stays the
# same at that rate; socat's measured figure falls when the machine is shared). The part of
# ringspan's cost that is AES-GCM is estimated from the project's cipher benchmark in its paired
# mode (benches/cipher.rs with RINGSPAN_BENCH_PAIRED=1, run as a plain binary: no criterion, a
# few seconds, once per round; data in cache, so a lower bound of what AES costs in the
# pipeline): 1 hop = 2 seals + 2 opens of a 64 KiB record per message. Medians over the rounds; the ratios are
# medians of the rounds' own.
#
# Appends to perf/results/bulk_budget.csv (the stamp's date,commit,cpu,avx512,vaes, then
# round,pipeline,measure,value,unit; perf/lib.sh; round "median" for the medians, pipeline
# "ratio" for the ratios) and prints a table; each round's figures go to stderr. Installs socat
# (and ss, iproute2) with apt-get if missing; needs python3.
#
#   perf/bulk_budget.sh [--rounds N] [--seconds S] [--no-aes]
#     --rounds N   N rounds of both pipelines, alternating (default 3)
#     --seconds S  the measured window of each run (default 5)
#     --no-aes     skip building and running the cipher benchmark (per-process figures only)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 seconds=5 aes=1
while (($#)); do
  case $1 in
    --rounds) rounds=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --no-aes) aes=0 ;;
    *) echo "usage: $0 [--rounds N] [--seconds S] [--no-aes]" >&2; exit 2 ;;
  esac
  shift
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "--seconds must be a positive integer" >&2; exit 2; }

source perf/lib.sh
missing=()
have socat || missing+=(socat)
have ss || missing+=(iproute2)
install_missing "${missing[@]}"
for tool in socat ss python3; do
  have "$tool" || { echo "$tool is needed (install it by hand)" >&2; exit 1; }
done

csv=perf/results/bulk_budget.csv
mkdir -p perf/results
csv_ready "$csv" "$stamp_header,round,pipeline,measure,value,unit"

# The cipher benchmark first: building it builds the binaries with the dev-dependencies'
# features, and the plain build after it puts the ordinary ones back in $release.
cipher_bench=""
if ((aes)); then
  echo "building the cipher benchmark ..." >&2
  if json=$(cargo build --release --quiet --bench cipher --message-format=json 2>/dev/null); then
    cipher_bench=$(python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cipher" and m.get("executable"):
        print(m["executable"])
' <<<"$json")
  fi
  [[ -n $cipher_bench ]] || echo "could not build benches/cipher.rs: per-process figures only" >&2
fi
echo "building release ..." >&2
cargo build --release --quiet
commit=$(commit_of_tree)
bin=$release/ringspan
bench=$release/ringspan-bench
echo "binaries: $bin, $bench (commit $commit)" >&2
work=$(mktemp -d /tmp/ringspan-bulk-budget-XXXX)
cleanup() {
  local status=$?
  stop_all
  if ((status == 0)); then rm -rf "$work"; else echo "failed: configs and logs kept in $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hz=$(getconf CLK_TCK)
cores=$(nproc)
mapfile -t ksoftirqd < <(pgrep '^ksoftirqd/' || true)

# utime + stime (clock ticks) and the scheduler's run time (ns) of each /proc stat directory
# given (/proc/PID: the whole process; /proc/PID/task/TID: one thread), summed: "TICKS NS".
cpu_of() {
  local ticks=0 ns=0 d s f r task
  for d in "$@"; do
    read -r s <"$d/stat"
    read -ra f <<<"${s##*) }" # fields from the 3rd on: utime is the 14th, stime the 15th
    ticks=$((ticks + f[11] + f[12]))
    # schedstat is one thread's: a process's is the sum of its threads' (those alive)
    if [[ -d $d/task ]]; then
      for task in "$d"/task/*; do
        { read -r r _ <"$task/schedstat"; } 2>/dev/null || r=0
        ns=$((ns + r))
      done
    else
      read -r r _ <"$d/schedstat"
      ns=$((ns + r))
    fi
  done
  echo "$ticks $ns"
}
# The whole machine's busy time (user + nice + system + irq + softirq) and steal, clock ticks.
machine() {
  local user nice system irq softirq steal
  read -r _ user nice system _ _ irq softirq steal _ </proc/stat
  echo "$((user + nice + system + irq + softirq)) $steal"
}
# The bytes the established socket of process $1 matching ss filter $2 has received.
bytes_in() {
  ss -tinpH state established "$2" | awk -v pid="pid=$1," '
    index($0, pid) { hit = 1; next }
    hit { if (match($0, /bytes_received:[0-9]+/)) print substr($0, RSTART + 15, RLENGTH - 15); exit }'
}
# Waits until the receiver (process $1, ss filter $2) has taken in a first megabyte; gives up
# after 20 s.
wait_flow() {
  local b
  for _ in $(seq 200); do
    b=$(bytes_in "$1" "$2")
    [[ -n $b ]] && ((b > 1 << 20)) && return 0
    sleep 0.1
  done
  echo "no data reached the receiver" >&2
  return 1
}
# One sample: "time bytes" then "TICKS NS" for each of sender, relay, receiver, ksoftirqd, then
# the machine's "BUSY STEAL".
# $1 receiver pid, $2 ss filter, $3 $4 $5 sender / relay / receiver stat directories.
sample() {
  local t bytes
  t=$EPOCHREALTIME
  bytes=$(bytes_in "$1" "$2")
  echo "$t $bytes $(cpu_of "$3") $(cpu_of "$4") $(cpu_of "$5") $(cpu_of "${ksoftirqd[@]/#//proc/}") $(machine)"
}
# The measured window: 0.5 s into the flow, $seconds long. Appends one line to $work/samples:
# "round pipeline payload wire sample0 sample1" (the samples as sample() prints them).
window() { # round pipeline payload wire recv-pid filter sender relay receiver
  local round=$1 pipeline=$2 payload=$3 wire=$4 s0 s1
  shift 4
  wait_flow "$1" "$2"
  sleep 0.5
  s0=$(sample "$@")
  sleep "$seconds"
  s1=$(sample "$@")
  echo "$round $pipeline $payload $wire $s0 $s1" >>"$work/samples"
}

# socat: the sender is the bench's main thread, the receiver its other thread.
run_socat() {
  local round=$1 receiver relay pid socat_pid tid t
  receiver=$(port) relay=$(port)
  socat -b65536 "TCP-LISTEN:$relay,bind=127.0.0.1,reuseaddr" "TCP:127.0.0.1:$receiver" \
    2>"$work/socat.log" &
  socat_pid=$!
  pids+=("$socat_pid")
  "$bench" nats bulk --size 65536 --listen "127.0.0.1:$receiver" --server "127.0.0.1:$relay" \
    --seconds $((seconds + 2)) >"$work/socat-bulk.out" &
  pid=$!
  pids+=("$pid")
  wait_flow "$pid" "( sport = :$receiver )"
  tid=""
  for t in /proc/"$pid"/task/*; do [[ $t == */task/"$pid" ]] || tid=$t; done
  [[ -n $tid ]] || { echo "the bulk tool's receiver thread is not there" >&2; return 1; }
  window "$round" socat 65536 65536 "$pid" "( sport = :$receiver )" \
    "/proc/$pid/task/$pid" "/proc/$socat_pid" "$tid"
  wait "$pid"
  echo "        socat round $round: $(<"$work/socat-bulk.out")" >&2
  stop_all
}

# ringspan: as perf/hops.sh at 1 hop, busy polling off.
run_ringspan() {
  local round=$1 prt r1 sender receiver send_pid recv_pid relay_pid out total received
  rm -f "$work"/*.key
  key() { "$bin" keygen --out "$work/$1.key" >/dev/null; "$bin" pubkey --key "$work/$1.key"; }
  sender=$(key sender) receiver=$(key receiver) r1=$(key r1) prt=$(port)
  {
    printf '[node]\nkey = "r1.key"\nlisten = ["127.0.0.1:%s"]\nworkers = 1\n' "$prt"
    echo "allow = [\"$sender\", { key = \"$receiver\", role = \"router\" }]"
    printf '\n[limits]\nbusy_poll_us = 0\n'
  } >"$work/r1.toml"
  "$bin" run --config "$work/r1.toml" 2>>"$work/r1.log" &
  relay_pid=$!
  pids+=("$relay_pid")
  "$bench" hops receive --relay "127.0.0.1:$prt" --relay-key "$r1" --key "$work/receiver.key" \
    --mount 0x1:0x10 --busy-poll-us 0 >"$work/receiver.out" 2>>"$work/receiver.log" &
  recv_pid=$!
  pids+=("$recv_pid")
  "$bench" hops send --relay "127.0.0.1:$prt" --relay-key "$r1" --key "$work/sender.key" \
    --mount 0x1:0x10 --mode one-way --size 65504 --warmup 1 --seconds $((seconds + 1)) \
    --busy-poll-us 0 --json >"$work/send.json" 2>>"$work/sender.log" &
  send_pid=$!
  pids+=("$send_pid")
  window "$round" ringspan 65504 0 "$recv_pid" "( dport = :$prt )" \
    "/proc/$send_pid" "/proc/$relay_pid" "/proc/$recv_pid"
  wait "$send_pid"
  # The wire bytes of one message: what the receiver's socket took in over the whole run (a
  # handshake and a few control messages besides the records) over the messages it received.
  total=$(bytes_in "$recv_pid" "( dport = :$prt )")
  out=$(<"$work/send.json")
  received=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["received"])' "$out")
  sed -i "\$s/ 65504 0 / 65504 $(python3 -c "print($total / $received)") /" "$work/samples"
  echo "        ringspan round $round: $out" >&2
  stop_all
}

: >"$work/samples"
: >"$work/aes"
# AES-GCM at 64 KiB on this CPU, in the record layer ringspan uses ("ours"), medians of 201
# interleaved rounds: appends "SEAL_NS OPEN_NS" to $work/aes.
aes_round() {
  local out
  echo "  [${SECONDS}s] round $1/$rounds: AES-GCM seal and open (benches/cipher.rs, paired) ..." >&2
  if out=$(RINGSPAN_BENCH_PAIRED=1 "$cipher_bench" 2>/dev/null); then
    printf '        %s\n' "${out//$'\n'/$'\n'        }" >&2
    awk '$1 == 65536 { for (i = 1; i <= NF; i++) { if ($i == "seal") s = $(i + 2); if ($i == "open") o = $(i + 2) } print s, o }' \
      <<<"$out" >>"$work/aes"
  fi
}
for ((round = 1; round <= rounds; round++)); do
  echo "  [${SECONDS}s] round $round/$rounds: socat ..." >&2
  run_socat "$round"
  echo "  [${SECONDS}s] round $round/$rounds: ringspan ..." >&2
  run_ringspan "$round"
  [[ -z $cipher_bench ]] || aes_round "$round"
done
# The medians of the AES rounds, or nothing.
aes_ns=""
if [[ -s $work/aes ]]; then
  aes_ns=$(python3 -c '
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if len(line.split()) == 2]
print(*(statistics.median(float(r[i]) for r in rows) for i in (0, 1)))' "$work/aes")
elif [[ -n $cipher_bench ]]; then
  echo "the cipher benchmark printed no 64 KiB line: per-process figures only" >&2
fi

python3 - "$work/samples" "$csv" "$(stamp "$commit")" "$hz" "$cores" "$seconds" "$aes_ns" <<'EOF'
import statistics, sys

samples, csv, stamp, hz, cores, seconds, aes = sys.argv[1:8]
hz, cores = int(hz), int(cores)
procs = ["sender", "relay", "receiver", "ksoftirqd"]
runs = {"socat": [], "ringspan": []}
for line in open(samples):
    f = line.split()
    rnd, pipeline, payload, wire = f[0], f[1], int(f[2]), float(f[3])
    a, b = [float(x) for x in f[4:16]], [float(x) for x in f[16:28]]
    d = [y - x for x, y in zip(a, b)]
    dt, msgs = d[0], d[1] / wire
    run = {"round": rnd, "seconds": dt, "msgs": msgs, "wire": wire, "msgs_per_sec": msgs / dt,
           "gbps": msgs * payload / dt / 1e9}
    for i, p in enumerate(procs):
        run[p] = d[2 + 2 * i] / hz * 1e6 / msgs
        run[p + "_sched"] = d[3 + 2 * i] / 1e3 / msgs
    run["total"] = sum(run[p] for p in procs)
    run["total_sched"] = sum(run[p + "_sched"] for p in procs)
    run["cores_used"] = run["total"] * msgs / dt / 1e6
    run["cores_others"] = d[10] / hz / dt - run["cores_used"]
    run["cores_steal"] = d[11] / hz / dt
    run["ceiling"] = cores * payload / run["total"] / 1e3
    runs[pipeline].append(run)
    print(f"        round {rnd} {pipeline:8}: " + ", ".join(f"{p} {run[p]:.2f}" for p in procs)
          + f", total {run['total']:.2f} µs/msg (schedstat {run['total_sched']:.2f}); "
          f"{msgs:.0f} msgs in {dt:.2f} s, {run['gbps']:.2f} GB/s, {wire:.0f} wire B/msg; "
          f"cores: pipeline {run['cores_used']:.2f}, others {run['cores_others']:.2f}, "
          f"steal {run['cores_steal']:.2f}", file=sys.stderr)

med = statistics.median
m = {pl: {k: med([r[k] for r in rs]) for k in rs[0] if k != "round"} for pl, rs in runs.items()}
pairs = list(zip(runs["socat"], runs["ringspan"]))
measured_ratio = med([r["gbps"] / s["gbps"] for s, r in pairs])
ceiling_ratio = med([r["ceiling"] / s["gbps"] for s, r in pairs])
cost_ratio = med([r["ceiling"] / s["ceiling"] for s, r in pairs])

rows = []
def row(rnd, pipeline, measure, value, unit):
    rows.append(f"{stamp},{rnd},{pipeline},{measure},{value:.4g},{unit}")
for pl, rs in runs.items():
    for r in rs + [dict(m[pl], round="median")]:
        for p in procs + ["total"]:
            row(r["round"], pl, p + "_cpu", r[p], "us/msg")
        row(r["round"], pl, "total_sched", r["total_sched"], "us/msg")
        row(r["round"], pl, "messages", r["msgs"], "msg")
        row(r["round"], pl, "window", r["seconds"], "s")
        row(r["round"], pl, "throughput", r["gbps"], "GB/s")
        row(r["round"], pl, "cores_used", r["cores_used"], "cores")
        row(r["round"], pl, "cores_others", r["cores_others"], "cores")
        row(r["round"], pl, "ceiling", r["ceiling"], "GB/s")
row("median", "ratio", "measured", measured_ratio, "x")
row("median", "ratio", "ringspan_ceiling_over_socat_measured", ceiling_ratio, "x")
row("median", "ratio", "ringspan_ceiling_over_socat_ceiling", cost_ratio, "x")

s, r = m["socat"], m["ringspan"]
n = len(runs["socat"])
print(f"\nbulk budget: 64 KiB messages through 1 relay hop, CPU per message (utime + stime over"
      f" {seconds} s windows; medians of {n} round{'s' if n > 1 else ''})\n")
hdr = f"{'':36} {'socat (plain)':>14} {'ringspan (AES)':>15}"
if aes:
    seal, open_ = (float(x) / 1e3 for x in aes.split())
    aes_of = {"sender": seal, "relay": seal + open_, "receiver": open_, "ksoftirqd": 0.0,
              "total": 2 * (seal + open_)}
    hdr += f" {'of it AES (est.)':>17}"
print(hdr)
names = {"sender": "sender", "relay": "relay (socat / ringspan run)", "receiver": "receiver",
         "ksoftirqd": "ksoftirqd (machine-wide)", "total": "total"}
for p in procs + ["total"]:
    line = f"{names[p] + ' µs/msg':36} {s[p]:14.2f} {r[p]:15.2f}"
    if aes:
        line += f" {aes_of[p]:17.2f}"
    print(line)
def line(name, key, digits=2):
    print(f"{name:36} {s[key]:14.{digits}f} {r[key]:15.{digits}f}")
line("total by schedstat µs/msg", "total_sched")
line("messages/s", "msgs_per_sec", 0)
line("measured GB/s (payload)", "gbps")
line("cores: the pipeline's", "cores_used")
line("cores: everything else's", "cores_others")
line(f"ceiling GB/s ({cores} cores)", "ceiling")
print(f"\nceiling = cores x payload / total CPU per message:"
      f" socat {cores} x 65,536 B / {s['total']:.2f} µs = {s['ceiling']:.2f} GB/s;"
      f" ringspan {cores} x 65,504 B / {r['total']:.2f} µs = {r['ceiling']:.2f} GB/s")
print(f"measured ratio, ringspan / socat:                {measured_ratio:.2f}x"
      f" (with the load that was on the machine)")
print(f"best reachable ratio, ringspan ceiling / socat measured: {ceiling_ratio:.2f}x"
      f" -- a ceiling, not a measurement: ringspan would need all {cores} cores to itself,"
      f" with no idle time")
print(f"ringspan ceiling / socat ceiling (CPU per message, socat / ringspan): {cost_ratio:.2f}x")
if aes:
    rest = r["total"] - aes_of["total"]
    print(f"AES-GCM, 64 KiB (benches/cipher.rs paired mode, data in cache, median of the rounds): seal {seal:.2f} µs,"
          f" open {open_:.2f} µs; 1 hop = 2 seals + 2 opens = {aes_of['total']:.2f} µs of"
          f" ringspan's {r['total']:.2f} µs ({100 * aes_of['total'] / r['total']:.0f}%);"
          f" without it {rest:.2f} µs/msg, ceiling {cores * 65504 / rest / 1e3:.2f} GB/s ="
          f" {cores * 65504 / rest / 1e3 / s['gbps']:.2f}x socat's measured")
    row("median", "ringspan", "aes_seal", seal, "us/op")
    row("median", "ringspan", "aes_open", open_, "us/op")
    row("median", "ringspan", "aes_cpu_est", aes_of["total"], "us/msg")
with open(csv, "a") as out:
    out.write("\n".join(rows) + "\n")
EOF
stamp_text "$commit"
echo "appended to $csv (round \"median\": the medians)"

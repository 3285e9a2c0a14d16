#!/usr/bin/env bash
# Where a relay's time goes: a flame graph and a flat profile of one `ringspan run` relay
# under load from `ringspan-bench hops`.
#
#   ringspan-bench hops send -> relay r1 <- ringspan-bench hops receive
#
# Records r1 with `perf record -e cpu-clock -g` (this VM has no hardware counters) for
# --seconds while the sender runs --mode at --size, then writes
#   perf/results/profile-<mode>-<size>.folded         collapsed stacks (one line per stack)
#   perf/results/profile-<mode>-<size>.svg            the flame graph (inferno, installed if missing)
#   perf/results/profile-<mode>-<size>.samples.txt    the functions with the most samples (self
#                                                     and with children), also printed
# With --callgrind, runs the relay (or --who) under valgrind for --count messages and writes
#   perf/results/profile-<mode>-<size>[-<who>].callgrind  the raw dump
#   perf/results/profile-<mode>-<size>[-<who>].top.txt    instructions per message, and the top
#                                                         functions inclusive and self, also printed
# The raw files (.folded, .svg, .callgrind) are large and name temporary paths: git ignores
# them. The .txt summaries are short and meant to be committed; each opens with the command and
# perf/lib.sh's stamp (date, the commit built, the CPU).
#
#   perf/profile.sh                          128 B one-way, 4 s
#   perf/profile.sh --size 65504             bulk
#   perf/profile.sh --mode rtt --size 16     round trips
#   perf/profile.sh --callgrind --size 128   instructions instead (valgrind, slow: --count N)
#   perf/profile.sh --callgrind --who sender the sender's (or --who receiver) instead of the relay's
set -euo pipefail
cd "$(dirname "$0")/.."
mode=one-way size=128 seconds=4 callgrind=0 count=200000 who=relay workers=1
while (($#)); do
  case $1 in
    --mode) mode=$2; shift ;;
    --size) size=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --callgrind) callgrind=1 ;;
    --count) count=$2; shift ;;
    --who) who=$2; shift ;;
    --workers) workers=$2; shift ;;
    *) echo "usage: $0 [--mode one-way|rtt|rtt-stream] [--size N] [--seconds S] [--workers W] [--callgrind [--count N] [--who relay|sender|receiver]]" >&2; exit 2 ;;
  esac
  shift
done
if ((callgrind)); then
  command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
else
  command -v perf >/dev/null || { echo "needs perf (linux-perf)" >&2; exit 1; }
  if ! command -v inferno-flamegraph >/dev/null; then
    echo "installing inferno (flame graphs) ..." >&2
    cargo install --quiet --locked inferno
  fi
fi
source perf/lib.sh
# Frame pointers, so perf can walk every stack cheaply; a target directory of its own, so the
# ordinary release build is left alone.
echo "building release with frame pointers (target/profile) ..." >&2
CARGO_TARGET_DIR=target/profile RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release --quiet
commit=$(commit_of_tree)
bin=./target/profile/release/ringspan
bench=./target/profile/release/ringspan-bench
work=$(mktemp -d /tmp/ringspan-profile-XXXX)
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

key() { "$bin" keygen --out "$work/$1.key" >/dev/null; "$bin" pubkey --key "$work/$1.key"; }
mount=0x1:0x10
sender=$(key sender) receiver=$(key receiver) relay=$(key relay) rport=$(port)
cat > "$work/relay.toml" <<EOF
[node]
key = "relay.key"
listen = ["127.0.0.1:$rport"]
workers = $workers
allow = ["$sender", { key = "$receiver", role = "router" }]
EOF
case $who in relay|sender|receiver) ;; *) echo "--who: relay, sender or receiver" >&2; exit 2 ;; esac
# Under callgrind, the process profiled. The relay's and the receiver's collection starts once
# the receiver's link is up (below), so start-up, the entropy pool's first fill (~400 million
# instructions) and the handshake are left out. The sender streams as soon as its link is up,
# so it is collected whole, and what its handshake cost (`Session::initiator`, which fills the
# entropy pool, and `Session::handle_handshake_bytes`) is taken off its figure.
grind() {
  if ((callgrind)) && [[ $1 == "$who" ]]; then
    local start=no
    [[ $who == sender ]] && start=yes
    echo valgrind --tool=callgrind --instr-atstart=$start --callgrind-out-file="$work/callgrind.out"
  fi
}
$(grind relay) "$bin" run --config "$work/relay.toml" 2>>"$work/relay.log" &
relay_pid=$!
pids+=("$relay_pid")
$(grind receiver) "$bench" hops receive --relay "127.0.0.1:$rport" --relay-key "$relay" \
  --key "$work/receiver.key" --mount "$mount" --wait 60 >/dev/null 2>>"$work/receiver.log" &
receiver_pid=$!
pids+=("$receiver_pid")
send() {
  $(grind sender) "$bench" hops send --relay "127.0.0.1:$rport" --relay-key "$relay" \
    --key "$work/sender.key" --mount "$mount" --mode "$mode" --size "$size" --wait 60 --json "$@"
}
name="profile-$mode-$size"
((workers == 1)) || name+="-w$workers"
[[ $who == relay ]] || name+="-$who"
mkdir -p perf/results
if ((callgrind)); then
  for _ in $(seq 120); do grep -q "link up" "$work/relay.log" 2>/dev/null && break; sleep 0.5; done
  sleep 2
  case $who in
    relay) callgrind_control -i on "$relay_pid" >/dev/null ;;
    receiver) callgrind_control -i on "$receiver_pid" >/dev/null ;;
  esac
  echo "sending $count messages through the relay, the $who under callgrind ..." >&2
  send --count "$count" >"$work/send.json"
  case $who in
    relay) kill -INT "$relay_pid"; wait "$relay_pid" 2>/dev/null || true ;;
    receiver) kill -INT "$receiver_pid"; wait "$receiver_pid" 2>/dev/null || true ;;
  esac
  cp "$work/callgrind.out" "perf/results/$name.callgrind"
  # Instructions per message: everything collected (for the sender, its handshake included, a
  # few million, and also without it), then per function with what it calls (inclusive) and on
  # its own (self). callgrind_annotate lists a function once per source file its inlined code
  # comes from: its inclusive cost is the largest of those lines, its self cost their sum.
  {
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "perf/results/$name.callgrind"
    echo "== self"
    callgrind_annotate --auto=no --threshold=100 "perf/results/$name.callgrind"
  } 2>/dev/null | python3 -c '
import re, sys
count, who, size, mode, stamp = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
inclusive, self_, total = {}, {}, 0
table = inclusive
for line in sys.stdin:
    if line.startswith("== self"):
        table = self_
        continue
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
    if not m:
        continue
    n, what = int(m.group(1).replace(",", "")), m.group(2).strip()
    if what == "PROGRAM TOTALS":
        total = n
        continue
    fn = what.split(":", 1)[-1].split(" [")[0]
    if table is inclusive:
        inclusive[fn] = max(inclusive.get(fn, 0), n)
    else:
        self_[fn] = self_.get(fn, 0) + n
handshake = sum(max((n for fn, n in inclusive.items()
                     if re.search(r"cipher::session::Session::" + step + r"\b", fn)), default=0)
                for step in ("initiator", "handle_handshake_bytes"))
print(f"# perf/profile.sh --callgrind --mode {mode} --size {size} --count {count} --who {who}")
print(f"# {stamp}")
print(f"# valgrind Ir (instructions) per message, {count} messages of {size} B")
print(f"# (generated; the raw dump perf/results/{sys.argv[6]}.callgrind is not in git)")
print()
print(f"{total / count:9.0f}  instructions per message, everything collected ({who})")
if handshake:
    print(f"{(total - handshake) / count:9.0f}  instructions per message, less the handshake")
for title, table, top in (("inclusive (with what it calls)", inclusive, 30),
                          ("self (its own instructions)", self_, 25)):
    print("\n%9s  %5s  %s: top %d" % ("per msg", "%", title, top))
    for fn, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n / count:9.0f}  {100 * n / max(total, 1):5.1f}  {fn[:110]}")
print()
print("(valgrind has no VAES: AES-GCM runs ring\x27s AES-NI code here, unlike the wall-clock runs)")
' "$count" "$who" "$size" "$mode" "$(stamp_text "$commit")" "$name" | tee "perf/results/$name.top.txt"
  echo "wrote perf/results/$name.top.txt (and the raw perf/results/$name.callgrind)" >&2
  exit 0
fi
echo "sending $mode $size B; recording the relay (pid $relay_pid) for $seconds s ..." >&2
send --seconds "$((seconds + 2))" --warmup 1 >"$work/send.json" &
send_pid=$!
pids+=("$send_pid")
sleep 2
perf record -q -e cpu-clock -F 4999 -g -p "$relay_pid" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
wait "$send_pid"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "perf/results/$name.folded"
inferno-flamegraph --title "ringspan relay: $mode $size B" < "perf/results/$name.folded" > "perf/results/$name.svg"
{
echo "# perf/profile.sh --mode $mode --size $size --seconds $seconds --workers $workers: cpu-clock samples of the relay"
echo "# $(stamp_text "$commit")"
echo "# (generated; the raw perf/results/$name.folded and .svg are not in git)"
python3 - "perf/results/$name.folded" "$work/send.json" <<'PYEOF'
import json, sys
from collections import Counter
self_, total = Counter(), Counter()
samples = 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    samples += n
    frames = [f.split("::{{closure}}")[0] for f in stack.split(";")]
    self_[frames[-1]] += n
    for f in set(frames):
        total[f] += n
result = json.load(open(sys.argv[2]))
rate = result.get("msgs_per_sec")
print(f"sender reported {rate:,.0f} msgs/s" if rate else "")
print(f"\n{'self %':>7}  function")
for f, n in self_.most_common(25):
    print(f"{100 * n / samples:7.1f}  {f[:110]}")
print(f"\n{'total %':>7}  function (with what it calls)")
for f, n in total.most_common(40):
    print(f"{100 * n / samples:7.1f}  {f[:110]}")
PYEOF
} | tee "perf/results/$name.samples.txt"
echo "wrote perf/results/$name.samples.txt (and the raw perf/results/$name.folded and .svg)"

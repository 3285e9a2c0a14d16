#!/usr/bin/env bash
# Very many idle client links on a satellite: a `ringspan run` node (role satellite, unknown
# keys accepted, one worker) and `ringspan-bench clients` opening N links to it, each under a
# key of its own and each opening a client's hello, spread over source addresses 127.0.0.x. Reads
# the satellite's resident memory before the clients come and while they are held idle, and
# prints handshakes/s, connect times and the satellite's RSS per idle client.
# Appends a row to perf/results/clients.csv (and perf/results/handshakes.csv), each stamped with
# date, commit and CPU (perf/lib.sh).
#
#   perf/clients.sh                   100,000 clients
#   perf/clients.sh --quick           10,000 clients
#   perf/clients.sh --clients N       N clients
#   perf/clients.sh --rate R          dial R links a second (default 2,000: the satellite's
#                                     default admission rate, ring::Config::max_handshakes_per_sec)
#   perf/clients.sh --hold S          hold the idle links S seconds (default 40; RSS is read
#                                     5 s before the end)
#   perf/clients.sh --engine-only     the same against `ringspan-bench serve` (the engine with a
#                                     service that keeps nothing per link) instead of a satellite
#                                     node: the engine's share of the memory per client
#   perf/clients.sh --mounts          each client also advertises one client mount (cluster 0x1),
#                                     as a client node with a mount attached does
#   perf/clients.sh --clients 15000 --rate 50000 --hold 6
#                                     handshakes as fast as they go: the satellite admits the
#                                     rate asked; "handshakes per satellite CPU second" is the
#                                     per-core figure (perf/results/handshakes.csv)
#   perf/clients.sh --split P         P satellites side by side on this host, each with its own
#                                     client load of N/P links dialled at R/P a second: for N
#                                     past what one process may hold open here (the RSS figure
#                                     is then the sum over the P satellites, per client)
#
# Needs python3 (a free port, the JSON report), and N/P + 1024 open files in each process: the
# script raises `ulimit -n` and stops with the reason if the hard limit is lower.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=100000
rate=2000
hold=40
server=satellite
split=1
mounts=()
while (($#)); do
  case "$1" in
    --quick) clients=10000 ;;
    --clients) clients=$2; shift ;;
    --rate) rate=$2; shift ;;
    --engine-only) server=engine ;;
    --hold) hold=$2; shift ;;
    --split) split=$2; shift ;;
    --mounts) mounts=(--mount-cluster 0x1) ;;
    *) echo "usage: perf/clients.sh [--clients N] [--quick] [--rate R] [--hold S] [--engine-only] [--split P] [--mounts]" >&2; exit 2 ;;
  esac
  shift
done

per=$(((clients + split - 1) / split))
want=$((per + 1024))
if ! ulimit -n "$want" 2>/dev/null; then
  echo "perf/clients.sh: $per clients per satellite need $want open files per process, but the" \
    "hard limit is $(ulimit -Hn) and this shell cannot raise it (needs CAP_SYS_RESOURCE):" \
    "at most $(($(ulimit -Hn) - 1024)) clients per process here; spread them with --split" >&2
  exit 1
fi

source perf/lib.sh
cargo build --release --quiet
commit=$(commit_of_tree)
bin=$release/ringspan
bench=$release/ringspan-bench
# The files the rows go to, checked before anything is measured.
mkdir -p perf/results
csv=perf/results/clients.csv
hcsv=perf/results/handshakes.csv
csv_ready "$csv" "$stamp_header,server,clients,rate,established,held,handshakes_per_sec,connect_p50_ms,connect_p99_ms,failed,lost,rss_before_kib,rss_held_kib,anon_before_kib,anon_held_kib,rss_per_client_bytes,anon_per_client_bytes"
csv_ready "$hcsv" "$stamp_header,server,clients,rate,established,handshakes_per_sec,satellite_cpu_seconds,handshakes_per_cpu_second"
work=$(mktemp -d /tmp/ringspan-clients-XXXX)
sats=()
tools=()
cleanup() {
  for pid in "${tools[@]}" "${sats[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
sum_status() {
  local total=0
  for pid in "${sats[@]}"; do total=$((total + $(status "$pid" "$1"))); done
  echo "$total"
}

# Each satellite admits the rate it is dialled at (its default, 2,000/s, is the script's default
# rate): a faster run measures handshakes, not admission control.
admit=$(python3 -c "import math; print(max(2000, math.ceil($rate / $split)))")

# P satellites (or engine-only servers), each on a port of its own.
for ((i = 0; i < split; i++)); do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" keygen --out "$work/sat$i.key"
  cat > "$work/sat$i.toml" <<EOF
[node]
key = "sat$i.key"
listen = ["127.0.0.1:$port"]
workers = 1
role = "satellite"
accept_unknown_keys = true
client_clusters = ["0x1"]

[limits]
keepalive_ms = 15000
idle_timeout_ms = 60000
max_handshakes_per_sec = $admit
EOF
  if [[ $server == satellite ]]; then
    "$bin" run --config "$work/sat$i.toml" 2> "$work/sat$i.log" &
  else
    "$bench" serve --listen "127.0.0.1:$port" --key "$work/sat$i.key" --keepalive-ms 15000 \
      > /dev/null 2> "$work/sat$i.log" &
  fi
  sats+=($!)
  echo "$port" > "$work/sat$i.port"
  for _ in $(seq 100); do
    ss -Hltn "sport = :$port" | grep -q . && break
    sleep 0.1
  done
done
sleep 1
# CPU time (user + system, clock ticks) the satellites have used: over the dialling, it gives
# handshakes per second of satellite CPU, i.e. per core.
cpu_ticks() {
  local total=0
  for pid in "${sats[@]}"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}
rss_before=$(sum_status VmRSS)
cpu_before=$(cpu_ticks)
anon_before=$(sum_status RssAnon)

# One client load per satellite, N/P links each, dialled at R/P a second.
rate_each=$(python3 -c "print($rate / $split)")
for ((i = 0; i < split; i++)); do
  n=$((i < split - 1 ? per : clients - per * (split - 1)))
  "$bench" clients --connect "127.0.0.1:$(cat "$work/sat$i.port")" \
    --peer-key "$("$bin" pubkey --key "$work/sat$i.key")" --clients "$n" \
    --rate "$rate_each" --keepalive-ms 15000 --hold "$hold" --json "${mounts[@]}" \
    > "$work/report$i.json" 2> "$work/clients$i.log" &
  tools+=($!)
done
# The links are up once each load says it holds them. Measure late in the hold: by then every
# link has been quiet for over a second and shed its record key schedules, as idle links do
# (SHED_KEYS_AFTER_MS), and has crossed its first 15 s keepalive.
for ((i = 0; i < split; i++)); do
  until grep -qs '^holding' "$work/clients$i.log"; do
    if ! kill -0 "${tools[$i]}" 2>/dev/null; then
      echo "perf/clients.sh: client load $i ended before holding its links:" >&2
      cat "$work/clients$i.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done
cpu_dial=$(python3 -c "print(($(cpu_ticks) - $cpu_before) / $(getconf CLK_TCK))")
sleep $((hold - 5))
rss_after=$(sum_status VmRSS)
anon_after=$(sum_status RssAnon)
for ((i = 0; i < split; i++)); do
  wait "${tools[$i]}" || echo "perf/clients.sh: client load $i failed (exit $?), see below" >&2
done
tools=()

# Totals over the loads: links add up, rates add up (the loads dial side by side), connect
# times are the median of the medians and the worst p99.
read -r established up hs p50 p99 failed lost < <(python3 -c '
import json, statistics, sys
rs = [json.load(open(f)) for f in sys.argv[1:]]
print(sum(r["established"] for r in rs), sum(r["up_now"] for r in rs),
      round(sum(r["handshakes_per_sec"] for r in rs)),
      round(statistics.median(r["connect_p50_ms"] for r in rs), 3),
      max(r["connect_p99_ms"] for r in rs), sum(r["failed"] for r in rs),
      sum(r["lost"] for r in rs))' "$work"/report*.json)
per_client=$(( (rss_after - rss_before) * 1024 / (up > 0 ? up : 1) ))
anon_per_client=$(( (anon_after - anon_before) * 1024 / (up > 0 ? up : 1) ))
label=$server
if ((${#mounts[@]})); then label="$label+mounts"; fi
if ((split > 1)); then label="$label x$split"; fi

printf '%-34s %s\n' "server" "$label"
printf '%-34s %s\n' "clients asked / established / held" "$clients / $established / $up"
printf '%-34s %s\n' "failed / lost after up" "$failed / $lost"
printf '%-34s %s\n' "handshakes/s" "$hs"
hs_core=$(python3 -c "print(round($established / $cpu_dial) if $cpu_dial > 0 else 0)")
printf '%-34s %s (%s CPU s while dialling)\n' "handshakes per satellite CPU second" "$hs_core" "$cpu_dial"
printf '%-34s %s / %s ms\n' "connect p50 / p99" "$p50" "$p99"
printf '%-34s %s -> %s KiB (anon %s -> %s KiB)\n' "satellite RSS before -> held" \
  "$rss_before" "$rss_after" "$anon_before" "$anon_after"
printf '%-34s %s bytes (anon %s)\n' "satellite RSS per idle client" "$per_client" "$anon_per_client"
if ((failed + lost > 0)); then
  python3 -c '
import json, sys
for f in sys.argv[1:]:
    r = json.load(open(f))
    for kind in ("failures", "lost_reasons"):
        for reason, n in r[kind].items():
            print(f"  {kind}: {n} x {reason}")' "$work"/report*.json
  grep -m3 WARN "$work"/sat*.log || true
fi

stamp_text "$commit"
echo "$(stamp "$commit"),$label,$clients,$rate,$established,$up,$hs,$p50,$p99,$failed,$lost,$rss_before,$rss_after,$anon_before,$anon_after,$per_client,$anon_per_client" >> "$csv"
echo "$(stamp "$commit"),$label,$clients,$rate,$established,$hs,$cpu_dial,$hs_core" >> "$hcsv"
echo "appended to $csv and $hcsv"

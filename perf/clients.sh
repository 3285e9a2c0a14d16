#!/usr/bin/env bash
# Very many idle client links on one satellite: a `ringspan run` node (role satellite, unknown
# keys accepted, one worker) and `ringspan bench clients` opening N links to it, each under a key
# of its own and each opening a client's hello, spread over source addresses 127.0.0.x. Reads
# the satellite's resident memory before the clients come and while they are held idle, and
# prints handshakes/s, connect times and the satellite's RSS per idle client.
# Appends a row to perf/results/clients.csv.
#
#   perf/clients.sh                   100,000 clients
#   perf/clients.sh --quick           10,000 clients
#   perf/clients.sh --clients N       N clients
#   perf/clients.sh --rate R          dial R links a second (default 2,000: the satellite's
#                                     default admission rate, ring::Config::max_handshakes_per_sec)
#   perf/clients.sh --hold S          hold the idle links S seconds (default 40; RSS is read
#                                     5 s before the end)
#   perf/clients.sh --engine-only     the same against `ringspan bench serve` (the engine with a
#                                     service that keeps nothing per link) instead of a satellite
#                                     node: the engine's share of the memory per client
#
# Needs python3 (a free port, the JSON report), and N + 1024 open files in both processes: the
# script raises `ulimit -n` and stops with the reason if the hard limit is lower.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=100000
rate=2000
hold=40
server=satellite
while (($#)); do
  case "$1" in
    --quick) clients=10000 ;;
    --clients) clients=$2; shift ;;
    --rate) rate=$2; shift ;;
    --engine-only) server=engine ;;
    --hold) hold=$2; shift ;;
    *) echo "usage: perf/clients.sh [--clients N] [--quick] [--rate R] [--hold S] [--engine-only]" >&2; exit 2 ;;
  esac
  shift
done

want=$((clients + 1024))
if ! ulimit -n "$want" 2>/dev/null; then
  echo "perf/clients.sh: $clients clients need $want open files per process, but the hard limit" \
    "is $(ulimit -Hn) and this shell cannot raise it (needs CAP_SYS_RESOURCE):" \
    "at most $(($(ulimit -Hn) - 1024)) clients here" >&2
  exit 1
fi

cargo build --release --quiet
bin=./target/release/ringspan
work=$(mktemp -d /tmp/ringspan-clients-XXXX)
sat=
cleanup() { [[ -n $sat ]] && kill "$sat" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" keygen --out "$work/sat.key"
pub=$("$bin" pubkey --key "$work/sat.key")
cat > "$work/sat.toml" <<EOF
[node]
key = "sat.key"
listen = ["127.0.0.1:$port"]
workers = 1
role = "satellite"
accept_unknown_keys = true

[limits]
keepalive_ms = 15000
idle_timeout_ms = 60000
EOF
if [[ $server == satellite ]]; then
  "$bin" run --config "$work/sat.toml" 2> "$work/sat.log" &
else
  "$bin" bench serve --listen "127.0.0.1:$port" --key "$work/sat.key" --keepalive-ms 15000 \
    > /dev/null 2> "$work/sat.log" &
fi
sat=$!
for _ in $(seq 100); do
  ss -Hltn "sport = :$port" | grep -q . && break
  sleep 0.1
done
sleep 1
status() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$sat/status"; }
rss_before=$(status VmRSS)
anon_before=$(status RssAnon)

"$bin" bench clients --connect "127.0.0.1:$port" --peer-key "$pub" --clients "$clients" \
  --rate "$rate" --keepalive-ms 15000 --hold "$hold" --json > "$work/report.json" 2> "$work/clients.log" &
tool=$!
# The links are up once the tool says it holds them. Measure late in the hold: by then every link
# has been quiet past its first 15 s keepalive and shed its record key schedules, as idle links
# do (SHED_KEYS_AFTER_MS).
until grep -q '^holding' "$work/clients.log"; do
  if ! kill -0 "$tool" 2>/dev/null; then
    echo "perf/clients.sh: the client load ended before holding its links:" >&2
    cat "$work/clients.log" >&2
    exit 1
  fi
  sleep 0.2
done
sleep $((hold - 5))
rss_after=$(status VmRSS)
anon_after=$(status RssAnon)
wait "$tool" || echo "perf/clients.sh: ringspan bench clients failed (exit $?), see below" >&2

read -r established up hs p50 p99 failed lost < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["established"], r["up_now"], round(r["handshakes_per_sec"]), r["connect_p50_ms"],
      r["connect_p99_ms"], r["failed"], r["lost"])' "$work/report.json")
per_client=$(( (rss_after - rss_before) * 1024 / (up > 0 ? up : 1) ))
anon_per_client=$(( (anon_after - anon_before) * 1024 / (up > 0 ? up : 1) ))

printf '%-34s %s\n' "server" "$server"
printf '%-34s %s\n' "clients asked / established / held" "$clients / $established / $up"
printf '%-34s %s\n' "failed / lost after up" "$failed / $lost"
printf '%-34s %s\n' "handshakes/s" "$hs"
printf '%-34s %s / %s ms\n' "connect p50 / p99" "$p50" "$p99"
printf '%-34s %s -> %s KiB (anon %s -> %s KiB)\n' "satellite RSS before -> held" \
  "$rss_before" "$rss_after" "$anon_before" "$anon_after"
printf '%-34s %s bytes (anon %s)\n' "satellite RSS per idle client" "$per_client" "$anon_per_client"
if ((failed + lost > 0)); then
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
for kind in ("failures", "lost_reasons"):
    for reason, n in r[kind].items():
        print(f"  {kind}: {n} x {reason}")' "$work/report.json"
  grep -m3 WARN "$work/sat.log" || true
fi

mkdir -p perf/results
csv=perf/results/clients.csv
[[ -f $csv ]] || echo "date,server,clients,rate,established,held,handshakes_per_sec,connect_p50_ms,connect_p99_ms,failed,lost,rss_before_kib,rss_held_kib,anon_before_kib,anon_held_kib,rss_per_client_bytes,anon_per_client_bytes" > "$csv"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ),$server,$clients,$rate,$established,$up,$hs,$p50,$p99,$failed,$lost,$rss_before,$rss_after,$anon_before,$anon_after,$per_client,$anon_per_client" >> "$csv"
echo "appended to $csv"

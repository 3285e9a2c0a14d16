#!/usr/bin/env bash
# ringspan against its references, in one run: perf/baselines.sh (nats-server one server and
# leaf -> hub, plain TCP, a socat relay) then perf/hops.sh (ringspan through 1 and 2 relays),
# back to back on the same machine, then every ratio and the issue's targets:
#
#   bulk through 1 relay hop                 >= 1.0x the socat -b65536 relay
#   128 B messages through 2 hops            >= 3x nats-server leafnode -> hub
#   RTT p99 through 1 hop                    <= 0.5x nats-server through 1 server
#
# ringspan is encrypted (AES-256-GCM records), the references are plaintext. Writes
# perf/results/compare.csv and perf/results/compare.svg (ratios, log scale, targets marked), both
# stamped with the date, the commit the rounds' rows carry (hops.sh's and baselines.sh's builds)
# and the CPU (perf/lib.sh).
#
#   perf/compare.sh              3 s (baselines) and 5 s (hops) per measurement, ~2 minutes
#   perf/compare.sh --quick      1 s per measurement, under a minute of measuring
#   perf/compare.sh --repeat N   N rounds, each the baselines then ringspan: each ratio is the
#                                median of the rounds' ratios (each round's own pair, so a
#                                drift between rounds cancels), the figures shown are medians,
#                                and compare.csv has every round's ratio
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/lib.sh
quick=() repeat=1
while (($#)); do
  case $1 in
    --quick) quick=(--quick) ;;
    --repeat) repeat=$2; shift ;;
    *) echo "usage: $0 [--quick] [--repeat N]" >&2; exit 2 ;;
  esac
  shift
done
rounds=$(mktemp -d /tmp/ringspan-compare-XXXX)
trap 'rm -rf "$rounds"' EXIT
for ((round = 1; round <= repeat; round++)); do
  echo "[compare] round $round of $repeat: baselines ..." >&2
  perf/baselines.sh "${quick[@]}" > /dev/null
  cp perf/results/baselines.csv "$rounds/baselines-$round.csv"
  echo "[compare] round $round of $repeat: ringspan through relay hops ..." >&2
  perf/hops.sh "${quick[@]}" > /dev/null
  cp perf/results/hops.csv "$rounds/hops-$round.csv"
done
# The builds measured: the commits in the rounds' rows (one, unless the tree changed between
# rounds: then each, space-separated).
commit=$(awk -F, 'FNR == 1 { c = 0; for (i = 1; i <= NF; i++) if ($i == "commit") c = i; next }
  c { print $c }' "$rounds"/*.csv | sort -u | paste -sd' ')
commit=${commit:-unknown}
STAMP=$(stamp "$commit") STAMP_TEXT=$(stamp_text "$commit") STAMP_HEADER=$stamp_header \
  ROUNDS=$rounds REPEAT=$repeat python3 - <<'PY'
import csv, glob, html, os, statistics

def load(kind):
    # Every round's value per key; the median is compared, the spread reported.
    values = {}
    paths = glob.glob(f"{os.environ['ROUNDS']}/{kind}-*.csv")
    for path in sorted(paths, key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0])):
        with open(path) as f:
            for r in csv.DictReader(f):
                key = (r["scenario"], int(r["hops"]), int(r["size"]))
                values.setdefault(key, []).append(float(r["value"]))
    return values

base_all = load("baselines")
ours_all = load("hops")
base = {k: statistics.median(v) for k, v in base_all.items()}
ours = {k: statistics.median(v) for k, v in ours_all.items()}
repeat = int(os.environ["REPEAT"])
# (what, ringspan key, reference key, higher is better, target ratio or None)
rows = []
for hops in (1, 2):
    for size in (16, 128, 1024):
        target = 3.0 if (hops, size) == (2, 128) else None
        rows.append((f"msgs/s {size} B, {hops} hop{'s' * (hops > 1)} vs nats",
                     ("msgs_per_sec", hops, size), ("nats one-way", hops, size), True, target))
    for q, nq in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        target = 0.5 if (hops, q) == (1, "p99") else None
        rows.append((f"RTT {q} 16 B, {hops} hop{'s' * (hops > 1)} vs nats",
                     (f"rtt_{q}_us", hops, 16), (f"nats rtt {nq}", hops, 16), False, target))
rows.append(("bulk 64 KiB, 1 hop vs socat relay", ("bulk_gbps", 1, 65504),
             ("tcp bulk", 1, 65536), True, 1.0))
rows.append(("bulk 64 KiB, 2 hops vs socat relay", ("bulk_gbps", 2, 65504),
             ("tcp bulk", 1, 65536), True, None))
rows.append(("bulk 64 KiB, 1 hop vs direct TCP", ("bulk_gbps", 1, 65504),
             ("tcp bulk", 0, 65536), True, None))
rows.append(("RTT p50 16 B, 1 hop vs direct TCP ping-pong", ("rtt_p50_us", 1, 16),
             ("tcp rtt p50", 0, 16), False, None))

out = []
print(f"{'comparison':48} {'ringspan':>12} {'reference':>12} {'ratio':>7}  target")
for what, k_ours, k_base, higher, target in rows:
    if k_ours not in ours or k_base not in base:
        print(f"{what:48} {'-':>12} {'-':>12} {'-':>7}  (not measured)")
        continue
    a, b = ours[k_ours], base[k_base]
    # Each round's ratio from its own pair of runs; the median of those is the ratio.
    ratios = [x / y for x, y in zip(ours_all[k_ours], base_all[k_base]) if y]
    ratio = statistics.median(ratios) if ratios else float("nan")
    verdict = ""
    if target is not None:
        met = ratio >= target if higher else ratio <= target
        verdict = f"{'>=' if higher else '<='} {target}x: {'met' if met else 'NOT met'}"
    print(f"{what:48} {a:12.1f} {b:12.1f} {ratio:6.2f}x  {verdict}")
    out.append((what, a, b, ratio, higher, target, verdict,
                " ".join(f"{r:.3g}" for r in ratios)))
if repeat > 1:
    print(f"(figures: medians of {repeat} rounds; ratio: the median of the rounds' ratios, "
          "each in perf/results/compare.csv)")

# perf/lib.sh's stamp (date,commit,cpu,avx512,vaes; no field holds a comma) first in each row.
stamp = os.environ["STAMP"].split(",")
print(os.environ["STAMP_TEXT"])
with open("perf/results/compare.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(os.environ["STAMP_HEADER"].split(",") +
               ["comparison", "ringspan", "reference", "ratio", "better", "target", "verdict",
                "rounds", "round_ratios"])
    for what, a, b, ratio, higher, target, verdict, round_ratios in out:
        w.writerow(stamp + [what, a, b, round(ratio, 4), "higher" if higher else "lower",
                            target if target is not None else "", verdict, repeat, round_ratios])

# A bar per comparison: the ratio on a log scale around 1x, better-is-right for every bar
# (lower-is-better ratios are drawn as their inverse), targets as ticks.
import math
width, bar_h, left = 900, 22, 360
height = 40 + bar_h * len(out) + 60
scale = lambda r: left + (math.log10(r) + 1) / 2 * (width - left - 20)  # 0.1x .. 10x
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
       'font-family="sans-serif" font-size="12">',
       f'<text x="10" y="20" font-size="14">ringspan / reference ({stamp[0]}, median of '
       f'{repeat} round{"s" * (repeat > 1)}); right of 1x is better for ringspan</text>']
for x in (0.1, 0.5, 1, 2, 5, 10):
    svg.append(f'<line x1="{scale(x):.1f}" y1="30" x2="{scale(x):.1f}" y2="{height - 50}" '
               f'stroke="#ccc"/><text x="{scale(x):.1f}" y="{height - 35}" '
               f'text-anchor="middle">{x}x</text>')
for i, (what, a, b, ratio, higher, target, verdict, _) in enumerate(out):
    y = 35 + i * bar_h
    good = ratio if higher else 1 / ratio
    x0, x1 = sorted((scale(1), scale(min(max(good, 0.1), 10))))
    colour = "#2a7" if good >= 1 else "#c44"
    svg.append(f'<text x="10" y="{y + 15}">{what}</text>')
    svg.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1):.1f}" '
               f'height="{bar_h - 8}" fill="{colour}"/>')
    svg.append(f'<text x="{scale(min(max(good, 0.1), 10)) + 4:.1f}" y="{y + 15}">'
               f'{good:.2f}x</text>')
    if target is not None:
        t = target if higher else 1 / target
        svg.append(f'<line x1="{scale(t):.1f}" y1="{y + 1}" x2="{scale(t):.1f}" '
                   f'y2="{y + bar_h - 1}" stroke="black" stroke-width="2"/>')
svg.append(f'<text x="10" y="{height - 10}" font-size="11">'
           f'{html.escape(os.environ["STAMP_TEXT"])}</text>')
svg.append("</svg>")
with open("perf/results/compare.svg", "w") as f:
    f.write("\n".join(svg) + "\n")
print("wrote perf/results/compare.csv and perf/results/compare.svg")
PY

# shellcheck shell=bash
# Shared by the perf scripts (sourced): where cargo puts the release binaries, the processes a
# script started, free ports, and the stamp every result row carries.

# The release binaries `cargo build --release` makes: in $CARGO_TARGET_DIR when it is set, as
# cargo puts them there (relative to the checkout's root, where the scripts run).
# shellcheck disable=SC2034 # used by the scripts that source this
release=${CARGO_TARGET_DIR:-target}/release

# Pids of the processes the script started; stop_all ends them.
pids=()

# Whether a command is on the PATH.
have() { command -v "$1" >/dev/null 2>&1; }

# Installs the Debian packages named (those whose command is missing; the caller lists them)
# with apt-get, as root or through sudo -n, updating the package lists once if the first try
# fails. Says so and goes on if it cannot: the caller checks `have` afterwards.
install_missing() {
  (($#)) || return 0
  if ! have apt-get; then
    echo "apt-get is not available: install $* by hand" >&2
    return 0
  fi
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo -n)
  echo "installing $* with apt-get ..." >&2
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" \
    >/dev/null 2>&1; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" \
      >/dev/null 2>&1 || echo "apt-get could not install $*" >&2
  fi
}

# Ends every process in $pids and waits for them.
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# A free TCP port on 127.0.0.1 (without python3, a random one that is probably free).
port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' \
    2>/dev/null || echo $((20000 + RANDOM % 20000))
}

# The stamp: which build was measured, on which machine, when. Every result row a script writes
# carries it; CSV files put these columns first, in this order:
#   date     UTC, 2026-12-06T10:20:30Z, when the row was written
#   commit   the short hash of the tree that built the binary, "-dirty" if that tree had changes
#            (perf/results/ aside: earlier runs' outputs are not the build); "unknown" when not
#            known; see commit_of_tree and commit_of_binary
#   cpu      /proc/cpuinfo's model name (commas and quotes left out)
#   avx512   yes or no: the avx512f flag (aws-lc-rs's AVX-512 AES-GCM; ring's VAES/AVX2 without)
#   vaes     yes or no: the vaes flag
# In text files, one line of key=value pairs (stamp_text).
# shellcheck disable=SC2034 # used by the scripts that source this
stamp_header=date,commit,cpu,avx512,vaes

# The machine's part, read once when this file is sourced.
stamp_cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | head -1 | tr -d ',"' |
  tr -s ' ')
[[ -n $stamp_cpu ]] || stamp_cpu="unknown $(uname -m)"
stamp_flags=" $(sed -n 's/^flags[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | head -1) "
stamp_avx512=no stamp_vaes=no
[[ $stamp_flags == *" avx512f "* ]] && stamp_avx512=yes
[[ $stamp_flags == *" vaes "* ]] && stamp_vaes=yes

# The commit of the git tree at $1 (default: the checkout these scripts are in): its short hash,
# with "-dirty" when a tracked file differs from it, perf/results/ aside. Call it right after
# the build, so that a tree edited during a long run is not blamed.
commit_of_tree() {
  local dir=${1:-$(dirname "${BASH_SOURCE[0]}")/..} hash
  hash=$(git -C "$dir" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return; }
  if ! git -C "$dir" diff --quiet HEAD -- . ':(top,exclude)perf/results' 2>/dev/null; then
    hash+=-dirty
  fi
  echo "$hash"
}

# The commit of the tree that built binary $1 (a build measured by perf/ab.sh, say). Cargo
# writes a dep-info file beside each binary ($1.d) naming its sources; the git tree holding the
# first of them built it. "unknown" without one (a binary copied away from its target
# directory, a scratch clone deleted since). "-stale" is added when a source it names in that
# tree is newer than the binary: the tree has moved on since the build, which was of an
# earlier state of it.
commit_of_binary() {
  local bin=$1 src dir top commit
  [[ -f $bin.d ]] || { echo unknown; return; }
  src=$(awk 'NR == 1 { print $2; exit }' "$bin.d")
  dir=$(dirname "$src")
  top=$(git -C "$dir" rev-parse --show-toplevel 2>/dev/null) || { echo unknown; return; }
  commit=$(commit_of_tree "$top")
  while read -r src; do
    if [[ $src == "$top"/* && $src -nt $bin ]]; then commit+=-stale; break; fi
  done < <(sed '1s/^[^:]*://' "$bin.d" | tr ' ' '\n')
  echo "$commit"
}

# The stamp's CSV fields for a row measuring commit $1: date,commit,cpu,avx512,vaes.
stamp() {
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ),$1,$stamp_cpu,$stamp_avx512,$stamp_vaes"
}

# The stamp as one line of key=value pairs, for text results.
stamp_text() {
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ) commit=$1 cpu=\"$stamp_cpu\" avx512=$stamp_avx512 vaes=$stamp_vaes"
}

# Rewrites CSV file $1, written by a tool without a stamp, with the stamp of commit $2 in front
# of its header and of every row.
stamp_csv() {
  local fields
  fields=$(stamp "$2")
  awk -v header="$stamp_header" -v fields="$fields" \
    'NR == 1 { print header "," $0; next } { print fields "," $0 }' "$1" > "$1.tmp"
  mv "$1.tmp" "$1"
}

# Makes CSV file $1 ready for rows under header $2 (stamp columns first) to be appended: writes
# the header if the file is new; stops the script, before anything is measured, if the file has
# another header (rows of an older format, which would be mixed).
csv_ready() {
  if [[ ! -s $1 ]]; then
    echo "$2" > "$1"
  elif [[ $(head -1 "$1") != "$2" ]]; then
    echo "$1 has another header than \"$2\": move it aside, or bring its rows to this one" >&2
    exit 1
  fi
}

# CPU time (user + system, in clock ticks: getconf CLK_TCK a second) process $1 has used, all its
# threads included: utime + stime from /proc/PID/stat, read after the command name (which may
# hold spaces). Fails (status 1, no message) if the process is gone.
proc_cpu_ticks() {
  local stat
  read -r stat 2>/dev/null < "/proc/$1/stat" || return 1
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<< "$stat"
}

# The CPU time of each thread of process $1, one "NAME TICKS" line each (NAME: the thread's
# comm, e.g. ringspan-w0 for engine worker 0; TICKS as proc_cpu_ticks). Threads gone while it
# reads are left out.
thread_cpu_ticks() {
  local task stat name
  for task in "/proc/$1/task"/*; do
    read -r name 2>/dev/null < "$task/comm" || continue
    read -r stat 2>/dev/null < "$task/stat" || continue
    stat=${stat##*) }
    awk -v name="${name// /_}" '{ print name, $12 + $13 }' <<< "$stat"
  done
}

# Whether process $1 is still running (not gone, not a zombie waiting to be reaped).
running() {
  local stat
  read -r stat 2>/dev/null < "/proc/$1/stat" || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

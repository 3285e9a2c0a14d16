# shellcheck shell=bash
# Shared by the perf scripts (sourced): where cargo puts the release binaries, the processes a
# script started, and free ports.

# The release binaries `cargo build --release` makes: in $CARGO_TARGET_DIR when it is set, as
# cargo puts them there (relative to the checkout's root, where the scripts run).
release=${CARGO_TARGET_DIR:-target}/release

# Pids of the processes the script started; stop_all ends them.
pids=()

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

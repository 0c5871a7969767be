#!/usr/bin/env bash
# Relay benchmark: Hearken vs rtpengine (userspace) on identical RTP traffic over loopback.
# Builds the release binaries, then runs relay-bench; every argument is passed on, e.g.
#   scripts/bench-relay.sh --calls 300 --seconds 10
#   scripts/bench-relay.sh --skip-rtpengine
# See docs/benchmarks.md ("Relay: Hearken vs rtpengine") for what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release --bin relay-bench --bin hearken

if [[ " $* " != *" --skip-rtpengine "* ]] && ! command -v rtpengine >/dev/null \
    && [[ " $* " != *" --rtpengine"* ]]; then
  echo "bench-relay: rtpengine not found; run scripts/setup.sh (rtpengine-daemon) or pass --skip-rtpengine" >&2
  exit 1
fi

# Each call holds 4 relay sockets in the relay and 2 in the bench: make sure the fd limit allows it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Other CPU load distorts the numbers on a small machine; say so rather than hide it.
load=$(cut -d' ' -f1 /proc/loadavg)
echo "bench-relay: $(nproc) cores, load average $load before the run" >&2

exec target/release/relay-bench "$@"

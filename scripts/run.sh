#!/usr/bin/env bash
# `make run`: start Hearken on the default config, drive one demo call through it (so there is
# something on /metrics and the whisper channel), then keep Hearken running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-config/hearken.toml}
BIN=target/release/hearken
"$BIN" check-config --config "$CONFIG" >/dev/null
"$BIN" run --config "$CONFIG" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 50); do
  curl -sf http://127.0.0.1:9090/healthz >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { echo "hearken exited during startup" >&2; exit 1; }
  sleep 0.2
done
cat <<MSG

Hearken is running (SIP 127.0.0.1:5060, status http://127.0.0.1:9090).
  Metrics:        http://127.0.0.1:9090/metrics
  Active calls:   http://127.0.0.1:9090/calls
  Call records:   http://127.0.0.1:9090/records
  Whisper (WS):   ws://127.0.0.1:9090/whisper?token=demo-agent7-token
Now a demo call: a PBX and agent7's phone on loopback, real SIP and RTP through the relay.

MSG
if [ "${HEARKEN_DEMO:-1}" != "0" ]; then
  "$BIN" demo-call --config "$CONFIG" || echo "(demo call failed; Hearken keeps running)"
fi
echo
echo "Hearken keeps running; run '$BIN demo-call' for another call. Ctrl-C to stop."
wait $PID

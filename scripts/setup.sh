#!/usr/bin/env bash
# Installs what Hearken needs to build, run and test, idempotently and quietly on reruns:
# Debian packages (real SIP/RTP peers for tests and benchmarks) and the Rust toolchain check.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake pkg-config sip-tester rtpengine-daemon prometheus espeak-ng sox)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  # --no-install-recommends: the rtpengine metapackage would pull a DKMS kernel module.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2; exit 1; }

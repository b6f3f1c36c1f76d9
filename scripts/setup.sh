#!/usr/bin/env bash
# Installs every build and test dependency of kvbench from Debian packages (and h5py from PyPI
# only for the optional cross-tool test). Idempotent: packages already present are not reinstalled,
# and apt-get is not touched at all when nothing is missing.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  libcli11-dev nlohmann-json3-dev libeigen3-dev libhdf5-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy python3-h5py
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all Debian dependencies present" >&2
fi

#!/usr/bin/env bash
# Install-time fetch of the Debian `odin` package's measured brain maps (T1/T2/PD) for ml/data.
# Idempotent: does nothing when the sample is already unpacked. Run as root or with apt access;
# nothing is downloaded at run time. Target: $ARTISCAN_ML_DATA/odin (default var/ml-data/odin).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${ARTISCAN_ML_DATA:-$root/var/ml-data}/odin"
sample="$dest/samples/brain_128x128.smp"
if [ -s "$sample" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-ml-data: apt-get not found; the odin source of ml/data will be unavailable" >&2
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
if ! apt-get download odin >/dev/null 2>&1; then
    # The package lists may be empty on a fresh machine.
    apt-get update >/dev/null
    apt-get download odin >/dev/null
fi
dpkg-deb -x odin_*.deb unpacked
mkdir -p "$dest/samples"
cp unpacked/usr/share/odin/samples/*.smp "$dest/samples/"
cp unpacked/usr/share/doc/odin/copyright "$dest/copyright"
echo "install-ml-data: odin samples in $dest/samples"

#!/usr/bin/env bash
# Fetch what tests/test_kernel.py boots: Debian's QEMU and static busybox (installed), and
# Debian's current amd64 kernel (its package unpacked into a cache directory, not installed).
#   tests/guest/get-kernel.sh [dir]     (default: $CREEPY_TEST_KERNEL or ~/.cache/creepy-test-kernel)
set -euo pipefail
dir="${1:-${CREEPY_TEST_KERNEL:-$HOME/.cache/creepy-test-kernel}}"
# (gcc and libc6-dev build the guest's static test programs; git is cloned in the guest)
if ! command -v qemu-system-x86_64 >/dev/null || [ ! -x /bin/busybox ] \
        || ! command -v gcc >/dev/null || ! command -v git >/dev/null \
        || [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        qemu-system-x86 busybox-static gcc libc6-dev git >/dev/null
fi
if ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1; then
    exit 0
fi
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null)
mkdir -p "$dir.new"
dpkg-deb -x "$tmp"/"$pkg"_*.deb "$dir.new"
rm -rf "$dir"
mv "$dir.new" "$dir"

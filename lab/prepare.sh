#!/bin/bash
# Prepare the lab kernel under $LAB_CACHE (default: .lab/ in the checkout, git-ignored):
#   kernel/   the stock Debian kernel package, extracted (never installed on the host)
#   vmlinux   its uncompressed ELF image (PVH boot: skips the in-guest decompressor)
#   initramfs.cpio.gz  busybox + the modules needed to mount the 9p root with an overlay
# Each step is skipped when its output is already there, so a second run takes ~1 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LAB_CACHE:-$ROOT/.lab}
mkdir -p "$CACHE/debs"

# 1. kernel package: resolve the ABI package behind the linux-image-amd64 metapackage once
if [ ! -f "$CACHE/kernel/.complete" ]; then
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  KPKG=$(kpkg)
  if [ -z "$KPKG" ]; then apt-get update -q; KPKG=$(kpkg); fi
  [ -n "$KPKG" ] || { echo "lab/prepare.sh: cannot resolve linux-image-amd64" >&2; exit 1; }
  echo "lab/prepare.sh: downloading $KPKG"
  (cd "$CACHE/debs" && apt-get download -q "$KPKG" 2>&1 | grep -v 'unsandboxed' || true)
  DEB=$(ls "$CACHE"/debs/"${KPKG}"_*.deb | head -1)
  rm -rf "$CACHE/kernel" "$CACHE/vmlinux"
  dpkg -x "$DEB" "$CACHE/kernel"
  KVER=$(ls "$CACHE/kernel/lib/modules" | head -1)
  depmod -b "$CACHE/kernel" "$KVER"
  echo "$KPKG $KVER" > "$CACHE/kernel/.complete"
  rm -f "$DEB"
fi
KVER=$(ls "$CACHE/kernel/lib/modules" | head -1)

# 2. uncompressed vmlinux (Debian amd64 kernels are XZ-compressed bzImages)
if [ ! -f "$CACHE/vmlinux" ]; then
  python3 - "$CACHE/kernel/boot/vmlinuz-$KVER" "$CACHE/vmlinux.tmp" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("no XZ payload in " + sys.argv[1])
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
if elf[:4] != b"\x7fELF":
    sys.exit("payload is not an ELF image")
open(sys.argv[2], "wb").write(elf)
PY
  mv "$CACHE/vmlinux.tmp" "$CACHE/vmlinux"
fi

# 3. initramfs, rebuilt when lab/init changes
STAMP=$(sha256sum "$ROOT/lab/init" | cut -c1-16)
if [ ! -f "$CACHE/initramfs.cpio.gz" ] || [ "$(cat "$CACHE/initramfs.stamp" 2>/dev/null)" != "$STAMP" ]; then
  T=$(mktemp -d)
  trap 'rm -rf "$T"' EXIT
  mkdir -p "$T/bin" "$T/modules"
  cp /bin/busybox "$T/bin/busybox"
  cp "$ROOT/lab/init" "$T/init"
  chmod 755 "$T/init" "$T/bin/busybox"
  for mod in virtio_pci virtio_blk 9pnet_virtio 9p overlay; do
    modprobe -d "$CACHE/kernel" -S "$KVER" --show-depends "$mod" | awk '$1=="insmod"{print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$T/modules/"
    basename "$ko" >> "$T/modules.order"
  done
  (cd "$T" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/initramfs.cpio.gz"
  echo "$STAMP" > "$CACHE/initramfs.stamp"
fi
echo "lab/prepare.sh: kernel $KVER ready in $CACHE"

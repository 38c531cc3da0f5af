#!/bin/bash
# Prepare a lab kernel under $LAB_CACHE (default: .lab/ in the checkout, git-ignored).
# LAB_KERNEL picks it: 6.12 (default: Debian trixie's stock kernel, with NVMe in-band
# authentication and TLS) or 6.1 (Debian bookworm's, the oldest kernel Sluice supports).
# Everything lands in $LAB_CACHE/kernels/$LAB_KERNEL/:
#   apt/      the lab's own apt configuration for that suite (own sources list, lists and cache:
#             the host's apt sources and state are never touched)
#   kernel/   the stock kernel package, extracted (never installed on the host), modules under lib/modules
#   vmlinux   its uncompressed ELF image (PVH boot: skips the in-guest decompressor)
#   initramfs.cpio.gz  busybox + the modules needed to mount the 9p root with an overlay
# Each step is skipped when its output is already there, so a second run takes ~1 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LAB_CACHE:-$ROOT/.lab}
KERNEL=${LAB_KERNEL:-6.12}
case "$KERNEL" in
  6.12) SUITE=trixie ;;
  6.1)  SUITE=bookworm ;;
  *) echo "lab/prepare.sh: LAB_KERNEL=$KERNEL: choose 6.12 (trixie) or 6.1 (bookworm)" >&2; exit 2 ;;
esac
K=$CACHE/kernels/$KERNEL
mkdir -p "$K"

# a cache laid out before kernels were selectable held the bookworm kernel at the top
if [ "$KERNEL" = 6.1 ] && [ -f "$CACHE/kernel/.complete" ] && [ ! -e "$K/kernel" ]; then
  mv "$CACHE/kernel" "$K/kernel"; mv "$CACHE/vmlinux" "$K/vmlinux" 2>/dev/null || true
  rm -f "$CACHE/initramfs.cpio.gz" "$CACHE/initramfs.stamp"
fi

# 1. kernel package from the suite's linux-image-amd64, through the lab's own apt configuration
if [ ! -f "$K/kernel/.complete" ]; then
  A=$K/apt
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" \
    > "$A/sources.list"
  APT=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/nonexistent
       -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Sandbox::User=root)
  kpkg() { { apt-cache "${APT[@]}" depends linux-image-amd64 2>/dev/null || true; } | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  KPKG=$(kpkg)
  if [ -z "$KPKG" ]; then apt-get "${APT[@]}" update -q >/dev/null; KPKG=$(kpkg); fi
  [ -n "$KPKG" ] || { echo "lab/prepare.sh: cannot resolve linux-image-amd64 in $SUITE" >&2; exit 1; }
  echo "lab/prepare.sh: downloading $KPKG ($SUITE)"
  rm -f "$A"/debs/*.deb
  (cd "$A/debs" && apt-get "${APT[@]}" download -q "$KPKG")
  DEB=$(ls "$A"/debs/"${KPKG}"_*.deb | head -1)
  rm -rf "$K/kernel" "$K/vmlinux" "$K/initramfs.cpio.gz"
  dpkg -x "$DEB" "$K/kernel"
  # merged-/usr packages (trixie) ship their modules under usr/lib/modules
  if [ -d "$K/kernel/usr/lib/modules" ] && [ ! -d "$K/kernel/lib/modules" ]; then
    mv "$K/kernel/usr/lib/modules" "$K/kernel/lib/modules" 2>/dev/null \
      || { mkdir -p "$K/kernel/lib"; mv "$K/kernel/usr/lib/modules" "$K/kernel/lib/modules"; }
  fi
  KVER=$(ls "$K/kernel/lib/modules" | head -1)
  depmod -b "$K/kernel" "$KVER"
  echo "$KPKG $KVER" > "$K/kernel/.complete"
  rm -f "$DEB"
fi
KVER=$(ls "$K/kernel/lib/modules" | head -1)

# 2. uncompressed vmlinux (bookworm's bzImage carries an XZ payload, trixie's a zstd one)
if [ ! -f "$K/vmlinux" ]; then
  python3 - "$K/kernel/boot/vmlinuz-$KVER" "$K/vmlinux.tmp" <<'PY'
import lzma, subprocess, sys
data = open(sys.argv[1], "rb").read()
xz, zstd = data.find(b"\xfd7zXZ\x00"), data.find(b"\x28\xb5\x2f\xfd")
if xz >= 0 and (zstd < 0 or xz < zstd):
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[xz:])
elif zstd >= 0:   # one zstd frame; what follows it in the bzImage is not zstd, so stop at the frame
    run = subprocess.run(["zstd", "-dc", "--single-thread"], input=data[zstd:], capture_output=True)
    elf = run.stdout
else:
    sys.exit("no XZ or zstd payload in " + sys.argv[1])
if elf[:4] != b"\x7fELF":
    sys.exit("payload is not an ELF image")
open(sys.argv[2], "wb").write(elf)
PY
  mv "$K/vmlinux.tmp" "$K/vmlinux"
fi

# 3. initramfs, rebuilt when lab/init changes; busybox insmod takes only uncompressed modules
STAMP=$(sha256sum "$ROOT/lab/init" | cut -c1-16)
if [ ! -f "$K/initramfs.cpio.gz" ] || [ "$(cat "$K/initramfs.stamp" 2>/dev/null)" != "$STAMP" ]; then
  T=$(mktemp -d)
  trap 'rm -rf "$T"' EXIT
  mkdir -p "$T/bin" "$T/modules"
  cp /bin/busybox "$T/bin/busybox"
  cp "$ROOT/lab/init" "$T/init"
  chmod 755 "$T/init" "$T/bin/busybox"
  for mod in virtio_pci virtio_blk 9pnet_virtio 9p overlay; do
    modprobe -d "$K/kernel" -S "$KVER" --show-depends "$mod" | awk '$1=="insmod"{print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    name=$(basename "$ko"); name=${name%.xz}; name=${name%.zst}
    case "$ko" in
      *.xz)  xz -dc "$ko" > "$T/modules/$name" ;;
      *.zst) zstd -qdc "$ko" > "$T/modules/$name" ;;
      *)     cp "$ko" "$T/modules/$name" ;;
    esac
    echo "$name" >> "$T/modules.order"
  done
  (cd "$T" && find . | cpio -o -H newc --quiet | gzip -1) > "$K/initramfs.cpio.gz"
  echo "$STAMP" > "$K/initramfs.stamp"
fi
echo "lab/prepare.sh: kernel $KVER ($SUITE) ready in $K"

#!/bin/bash
# Install the Debian packages Sluice and its lab need, only those missing.
# The lab guest runs the host's root filesystem (read-only over 9p), so everything
# the guest runs (lvm2, nvme-cli, fio, udev, mkfs, python) is installed here, on the host.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 busybox-static kmod cpio          # the VM and its initramfs
  lvm2 thin-provisioning-tools                      # thin pools
  nvme-cli fio udev                                 # initiator tools, benchmarks, udevd
  e2fsprogs xfsprogs util-linux iproute2 procps     # mkfs, mount, ip, pgrep
  openssl fdisk                                     # test PKI for the agent's TLS; sfdisk
  iptables nftables                                 # fault tests black-hole a target's ports
  prometheus                                        # a real Prometheus server and promtool for the metrics tests
  buildah debootstrap                               # make image: builds without a Docker engine or a registry
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "lab/deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

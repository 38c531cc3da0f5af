#!/bin/bash
# Lab stage 2: PID 1 inside the guest, on the overlay of the host root.
# Sets up what a storage/worker node has (proc/sys/dev mounts, cgroup v2, configfs,
# loopback up, udevd), runs the script named by lab.script=, writes its exit code to
# $LAB_OUT/rc on the writable results share, and powers the VM off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
uptime_s() { cut -d' ' -f1 /proc/uptime; }
echo "LAB-STAGE2 uptime=$(uptime_s)"

SCRIPT=""; OUT=""
for x in $(cat /proc/cmdline); do
  case "$x" in
    lab.script=*) SCRIPT="${x#lab.script=}" ;;
    lab.out=*)    OUT="${x#lab.out=}" ;;
  esac
done

mount -t tmpfs -o mode=0755,size=256m tmpfs /run
mkdir -p /run/lock /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
modprobe configfs && mount -t configfs configfs /sys/kernel/config
ip link set lo up
hostname lab-guest
: > /etc/machine-id

# the writable results share, mounted over its read-only view in the host root
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labout "$OUT" \
  || echo "LAB-STAGE2: cannot mount the results share at $OUT"

/lib/systemd/systemd-udevd --daemon --resolve-names=never
# coldplug block devices only (a full coldplug costs ~15 s under TCG); devices created
# later (loop, dm, nvme) get their events processed as they appear
udevadm trigger --action=add --subsystem-match=block
udevadm settle --timeout=30
echo "LAB-SCRIPT-START uptime=$(uptime_s)"

export LAB_GUEST=1 LAB_OUT="$OUT"
bash "$SCRIPT"
rc=$?
echo "$rc" > "$OUT/rc"
echo "LAB-EXIT rc=$rc uptime=$(uptime_s)"
sync
umount "$OUT" 2>/dev/null
/bin/busybox poweroff -f
echo o > /proc/sysrq-trigger
sleep 10

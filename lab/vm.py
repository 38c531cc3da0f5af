#!/usr/bin/env python3
"""Boot the lab kernel under qemu (TCG) and run one command inside it.

    python3 lab/vm.py [--timeout S] [--out DIR] -- COMMAND [ARG...]

The guest's root is this machine's root, read-only over virtio-9p with a tmpfs overlay,
so COMMAND runs with the project checkout and its virtualenv at the same paths as here.
It runs in the checkout directory with LAB_GUEST=1 and LAB_OUT set to DIR, a folder
shared writable with the host (results such as a JUnit report go there). Blank sparse
scratch disks are attached as /dev/vda, /dev/vdb (--disks).

Exit status: COMMAND's exit status; 124 when the guest hung past --timeout (qemu is
killed); 125 when the guest never reported one. The serial console is echoed to stdout
and kept in DIR/serial.log.

A guest whose kernel dies before COMMAND starts (TCG rarely trips over the kernel's own
code patching while it boots: "Oops: int3" in a static branch, then a panic) is booted
again, up to --boot-retries times; the failed boot's console is kept as
DIR/serial-boot-failure-N.log. Once COMMAND has started nothing is retried.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_RC = 124
NO_REPORT_RC = 125


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=float(os.environ.get("LAB_TIMEOUT", 2400)))
    p.add_argument("--mem", default=os.environ.get("LAB_MEM", "4G"))
    p.add_argument("--smp", default=os.environ.get("LAB_SMP", "2"))
    p.add_argument("--scratch-size", default=os.environ.get("LAB_SCRATCH_SIZE", "16G"))
    p.add_argument("--disks", type=int, default=int(os.environ.get("LAB_DISKS", 2)),
                   help="blank sparse scratch disks to attach (/dev/vda, /dev/vdb, ...)")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LAB_CACHE", ROOT / ".lab")))
    p.add_argument("--kernel", default=os.environ.get("LAB_KERNEL", "6.12"), choices=("6.12", "6.1"),
                   help="lab kernel: 6.12 (Debian trixie, the default) or 6.1 (bookworm, the oldest supported)")
    p.add_argument("--out", type=Path, help="results folder (default: CACHE/runs/<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="do not echo the serial console")
    p.add_argument("--boot-retries", type=int, default=int(os.environ.get("LAB_BOOT_RETRIES", 2)),
                   help="boot again when the kernel dies before COMMAND starts (never after)")
    p.add_argument("--append", default="", help="extra kernel command-line arguments")
    p.add_argument("command", nargs="+")
    return p.parse_args(argv)


def kernel_paths(cache: Path, kernel: str) -> tuple[Path, Path, Path]:
    k = cache / "kernels" / kernel
    vmlinux, initrd, moddir = k / "vmlinux", k / "initramfs.cpio.gz", k / "kernel/lib/modules"
    for path in (vmlinux, initrd, moddir):
        if not path.exists():
            sys.exit(f"lab/vm.py: {path} is missing: run `LAB_KERNEL={kernel} make lab` (lab/prepare.sh) first")
    return vmlinux, initrd, moddir


def write_guest_script(out: Path, command: list[str]) -> Path:
    script = out / "guest.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"cd {shlex.quote(str(ROOT))}\n"
        f"exec {shlex.join(command)}\n"
    )
    return script


def fresh_scratch_disks(cache: Path, size: str, count: int) -> list[Path]:
    """Blank sparse disks in a folder of this VM's own, so several VMs can run side by side."""
    if count == 0:
        return []
    folder = Path(tempfile.mkdtemp(prefix="scratch-", dir=cache))
    disks = [folder / f"scratch{i}.img" for i in range(count)]
    for disk in disks:
        subprocess.run(["truncate", "-s", size, str(disk)], check=True)
    return disks


def qemu_command(args: argparse.Namespace, out: Path, script: Path, disks: list[Path]) -> list[str]:
    vmlinux, initrd, moddir = kernel_paths(args.cache, args.kernel)
    append = " ".join([
        "console=ttyS0 panic=-1 quiet loglevel=4",
        f"lab.stage2={ROOT / 'lab/stage2.sh'}",
        f"lab.moddir={moddir}",
        f"lab.script={script}",
        f"lab.out={out}",
        args.append,
    ]).strip()
    return [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
        "-smp", args.smp, "-m", args.mem, "-bios", "/usr/share/qemu/qboot.rom",
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(vmlinux), "-initrd", str(initrd), "-append", append,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=labout,security_model=none,multidevs=remap",
    ] + [arg for disk in disks
         for arg in ("-drive", f"file={disk},if=virtio,format=raw,cache=none,aio=threads,discard=unmap")]


def pump_serial(proc: subprocess.Popen, log: Path, echo: bool) -> None:
    t0 = time.monotonic()
    with log.open("w", encoding="utf-8") as fh:
        for raw in proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            for seq in ("\x1bc", "\x1b[?7l", "\x1b[2J", "\x1b[0m"):
                line = line.replace(seq, "")
            fh.write(f"[{time.monotonic() - t0:8.3f}] {line}\n")
            fh.flush()
            if echo:
                print(line, flush=True)


SCRIPT_STARTED = "LAB-SCRIPT-START"


def run(args: argparse.Namespace) -> int:
    out = args.out or args.cache / "runs" / time.strftime("%Y%m%d-%H%M%S")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    script = write_guest_script(out, args.command)
    for attempt in range(args.boot_retries + 1):
        rc, started = boot_once(args, out, script)
        if started or rc in (0, TIMEOUT_RC):
            return rc
        kept = out / f"serial-boot-failure-{attempt + 1}.log"
        (out / "serial.log").replace(kept)
        print(f"lab/vm.py: the guest died before the command started (boot {attempt + 1}); "
              f"console kept in {kept}", file=sys.stderr)
    print(f"lab/vm.py: giving up after {args.boot_retries + 1} failed boots", file=sys.stderr)
    return rc


def boot_once(args: argparse.Namespace, out: Path, script: Path) -> tuple[int, bool]:
    """One boot: (exit status, whether the guest got as far as starting COMMAND)."""
    (out / "rc").unlink(missing_ok=True)
    disks = fresh_scratch_disks(args.cache, args.scratch_size, args.disks)
    cmd = qemu_command(args, out, script, disks)
    (out / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    pump = threading.Thread(target=pump_serial, args=(proc, out / "serial.log", not args.quiet), daemon=True)
    pump.start()
    try:
        proc.wait(timeout=args.timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    pump.join(timeout=10)
    for disk in disks:
        disk.unlink(missing_ok=True)
    if disks:
        disks[0].parent.rmdir()
    elapsed = time.monotonic() - started
    rc = guest_rc(out, timed_out)
    verdict = "passed" if rc == 0 else "FAILED"
    print(f"lab/vm.py: guest {verdict} rc={rc} in {elapsed:.1f} s (qemu exit {proc.returncode}); "
          f"serial log: {out / 'serial.log'}", file=sys.stderr)
    return rc, command_started(out / "serial.log")


def command_started(log: Path) -> bool:
    try:
        return SCRIPT_STARTED in log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def guest_rc(out: Path, timed_out: bool) -> int:
    if timed_out:
        print("lab/vm.py: TIMEOUT: the guest did not finish and was killed", file=sys.stderr)
        return TIMEOUT_RC
    try:
        return int((out / "rc").read_text().strip())
    except (OSError, ValueError):
        print("lab/vm.py: the guest never reported an exit status", file=sys.stderr)
        return NO_REPORT_RC


if __name__ == "__main__":
    sys.exit(run(parse_args(sys.argv[1:])))

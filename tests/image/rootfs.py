"""The built image's root filesystem, exported by `lab/image.sh export` (make image-test),
and a way to run a command in it as its entry point would (its PATH and environment)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = Path(os.environ.get("LAB_CACHE", ROOT / ".lab")) / "image"
ROOTFS = IMAGE_DIR / "rootfs"
MODES = {"controller": "--targets-config", "node": "--cgroup-root", "agent": "--vg", "all": "--target-vg"}
NODE_TOOLS = ("nvme", "mkfs.ext4", "mkfs.xfs", "blkid", "lvm", "modprobe")


def image_config() -> dict:
    path = IMAGE_DIR / "config.json"
    assert ROOTFS.is_dir() and path.is_file(), "no exported image: run `make image-test` (lab/image.sh export)"
    return json.loads(path.read_text())


def run(*cmd: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`cmd` chrooted into the image, with only the image's environment."""
    env = dict(item.split("=", 1) for item in image_config()["Env"])
    userspec = [f"--userspec={user}"] if user else []
    return subprocess.run(["chroot", *userspec, str(ROOTFS), "/usr/bin/env", "-i",
                           *(f"{k}={v}" for k, v in env.items()), *cmd],
                          capture_output=True, text=True, timeout=timeout)

"""The SPDK tests against either the fake target (CI) or a real nvmf_tgt (your session).

Set SLUICE_SPDK_NVMF_TGT to the path of an nvmf_tgt binary (SPDK v26.05) and every SPDK
host test — the Backend contract suite included — runs against a real target instead of
tests/fakes/spdk_target.py: each test starts its own nvmf_tgt on a fresh RPC socket,
with a sparse aio file as the base bdev, and kills it at the end. Or set
SLUICE_SPDK_SOCKET to the RPC socket of a running nvmf_tgt dedicated to the tests (on
this machine: it opens the tests' aio files): each test's base bdev, lvstore and every
subsystem but discovery are deleted after it; the tests that restart the target are
skipped (they need the binary). All are driven through the same small surface:

    .path            the RPC socket
    .image           the aio file the lvstore lives on
    .target          an object with one method per RPC (the fake itself, or a raw
                     JSON-RPC view of the real one); errors raise RpcError(code, message)
    .restart()       what a crash and restart of nvmf_tgt does (lvols stay on disk)
    .down(), .up()   the same in two halves (killed; started again)
    .stop()

The real target runs as FACTS.md says: --no-huge -s 1024 -m 0x1 --no-pci --interrupt-mode,
listeners on 127.0.0.1 only (a free port, SLUICE_SPDK_PORT to choose one).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.fakes.spdk_target import FakeSpdk, FakeSpdkServer, RpcError

GiB = 1 << 30
FAKE_IMAGE = "/srv/sluice/spdk.img"
NVMF_TGT = os.environ.get("SLUICE_SPDK_NVMF_TGT", "")
SOCKET = os.environ.get("SLUICE_SPDK_SOCKET", "")
REAL = bool(NVMF_TGT or SOCKET)


def free_port() -> str:
    if os.environ.get("SLUICE_SPDK_PORT"):
        return os.environ["SLUICE_SPDK_PORT"]
    if not REAL:
        return "4420"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def raw_call(path: Path, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
    """One JSON-RPC request on a fresh connection; the raw response object."""
    request = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        request["params"] = params
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode())
        buf = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"{method}: connection closed")
            buf += chunk
            try:
                return json.loads(buf)
            except ValueError:
                continue


class RealView:
    """The real target with one method per RPC, like FakeSpdk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        def call(**params):
            response = raw_call(self.path, method, params or None)
            if "error" in response:
                raise RpcError(response["error"]["code"], response["error"]["message"])
            return response["result"]
        return call


class RealSpdkServer:
    def __init__(self, workdir: Path, image_bytes: int = 4 * GiB, image: str | None = None,
                 binary: str | None = None, start_timeout: float = 120.0) -> None:
        """`image`: an existing file or block device for the base bdev (else a sparse
        file of `image_bytes` is made); `binary`: nvmf_tgt (else SLUICE_SPDK_NVMF_TGT)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.binary = binary or NVMF_TGT
        self.path = workdir / "spdk.sock"
        self.image = image or str(workdir / "spdk.img")
        if image is None:
            with open(self.image, "wb") as fh:
                fh.truncate(image_bytes)
        self.target = RealView(self.path)
        self.log = workdir / "nvmf_tgt.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        timeout = self.start_timeout
        self.path.unlink(missing_ok=True)
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--no-huge", "-s", "1024", "-m", "0x1", "--no-pci", "--interrupt-mode",
                 "--disable-cpumask-locks",  # other targets may run on core 0 too
                 "-r", str(self.path)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                raw_call(self.path, "spdk_get_version", timeout=5)
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"nvmf_tgt did not answer on {self.path}: {self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None

    def restart(self) -> None:
        self.down()
        self.up()

    def down(self) -> None:
        self.kill()

    def up(self) -> None:
        self.start()

    def stop(self) -> None:
        self.kill()  # the test is over: nothing on the target needs a clean shutdown


class SharedSpdkServer:
    """A running nvmf_tgt the tests share (SLUICE_SPDK_SOCKET), emptied after each test."""

    def __init__(self, workdir: Path, image_bytes: int = 4 * GiB) -> None:
        self.path = Path(SOCKET)
        self.image = str(workdir / "spdk.img")
        with open(self.image, "wb") as fh:
            fh.truncate(image_bytes)
        self.target = RealView(self.path)

    def restart(self) -> None:
        import pytest

        pytest.skip("restarting the target needs SLUICE_SPDK_NVMF_TGT (the binary), not a socket")

    down = up = restart

    def stop(self) -> None:
        for sub in self.target.nvmf_get_subsystems():
            if sub["subtype"] != "Discovery":
                self.target.nvmf_delete_subsystem(nqn=sub["nqn"])
        for lvs in self.target.bdev_lvol_get_lvstores():
            self.target.bdev_lvol_delete_lvstore(lvs_name=lvs["name"])
        for bdev in self.target.bdev_get_bdevs():
            if bdev["product_name"] == "AIO disk":
                self.target.bdev_aio_delete(name=bdev["name"])


def make_server(workdir: Path, image_bytes: int = 4 * GiB):
    """A fresh target: real when SLUICE_SPDK_NVMF_TGT (or _SOCKET) is set, else the fake."""
    if NVMF_TGT:
        return RealSpdkServer(workdir, image_bytes)
    if SOCKET:
        return SharedSpdkServer(workdir, image_bytes)
    server = FakeSpdkServer(workdir / "spdk.sock", FakeSpdk({FAKE_IMAGE: image_bytes}))
    server.image = FAKE_IMAGE
    return server

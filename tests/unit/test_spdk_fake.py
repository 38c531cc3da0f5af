"""The fake SPDK target answers every request of the real v26.05 transcripts exactly as
the real target did (UUIDs it generates stand in for the real ones consistently; the
allocation and I/O counters that only real I/O moves are not compared)."""

from __future__ import annotations

import json
import re

import pytest

from tests.fakes.spdk_target import FIXTURES, FakeSpdk, FakeSpdkServer, RpcError

GiB = 1 << 30
FILES = {**{f"/var/lib/spdk-data/aio{i}.img": 2 * GiB for i in range(4)}, "/var/lib/spdk-data/spdk.img": 2 * GiB}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NGUID = re.compile(r"^[0-9A-F]{32}$")
# where the recorder started a fresh nvmf_tgt (its TCP transport is created again, without error)
RESTARTED_BEFORE = {"restart: create TCP transport", "p5: transport", "restart: transports are gone"}
MOVED_BY_IO = {"num_allocated_clusters", "bytes_read", "num_read_ops", "read_latency_ticks",
               "max_read_latency_ticks", "min_read_latency_ticks", "ticks"}


def transcript(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


class Same:
    """Compares an answer with the recorded one, mapping generated UUIDs one to one."""

    def __init__(self) -> None:
        self.uuids: dict[str, str] = {}

    def translate(self, params: dict) -> dict:
        """A request naming a real UUID names the fake's stand-in for it."""
        return {k: self.uuids.get(v, v) if isinstance(v, str) else v for k, v in params.items()}

    def check(self, got, want, where: str) -> None:
        if isinstance(want, dict):
            assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
            for key in want:
                if key not in MOVED_BY_IO:
                    self.check(got[key], want[key], f"{where}.{key}")
        elif isinstance(want, list):
            assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                self.check(g, w, f"{where}[{i}]")
        elif isinstance(want, str) and UUID.match(want) and isinstance(got, str) and UUID.match(got):
            assert self.uuids.setdefault(want, got) == got, f"{where}: {got} stands for {want} inconsistently"
        elif isinstance(want, str) and NGUID.match(want) and isinstance(got, str):
            real = {w.replace("-", "").upper(): g.replace("-", "").upper() for w, g in self.uuids.items()}
            assert real.get(want, want) == got, f"{where}: {got} != {want}"
        else:
            assert got == want and type(got) is type(want), f"{where}: {got!r} != {want!r}"


@pytest.mark.parametrize("name", ["rpc-transcript-v26.05.jsonl", "rpc-transcript-v26.05-interrupt-mode.jsonl",
                                  "rpc-transcript-v26.05-limits.jsonl"])
def test_the_fake_answers_every_recorded_request_as_the_real_target_did(name):
    fake, same = FakeSpdk(FILES), Same()
    for line in transcript(name):
        if line["label"] in RESTARTED_BEFORE:
            fake.restart()
        request, response = line["request"], line["response"]
        try:
            params = json.loads(json.dumps(request.get("params", {})), object_hook=same.translate)
            got = {"result": fake.handle(request["method"], params)}
        except RpcError as err:
            got = {"error": {"code": err.code, "message": err.message}}
        assert ("error" in got) == ("error" in response), line["label"]  # not expect_error: SPDK surprised its recorder
        if "error" in response:
            assert got["error"] == response["error"], line["label"]
        else:
            same.check(got["result"], response["result"], line["label"])


def test_the_official_client_talks_to_the_fake_over_its_socket(tmp_path):
    from spdk.rpc.client import JSONRPCClient, JSONRPCException

    server = FakeSpdkServer(tmp_path / "spdk.sock", FakeSpdk(FILES))
    try:
        client = JSONRPCClient(str(tmp_path / "spdk.sock"), timeout=5)
        assert client.spdk_get_version()["version"] == "SPDK v26.05"
        assert client.nvmf_create_transport(trtype="TCP") is True
        with pytest.raises(JSONRPCException, match="already exists"):
            client.nvmf_create_transport(trtype="TCP")
        client.close()
    finally:
        server.stop()

"""sluice_common: the command runner, atomic state files, the gRPC status table."""

from __future__ import annotations

import json
import os

import grpc
import pytest

from sluice_common import errors, grpc_status, runner, statefile


def test_runner_returns_output_and_raises_typed_errors():
    assert runner.run(["sh", "-c", "echo $LC_ALL"]).stdout.strip() == "C"
    with pytest.raises(runner.CommandFailed) as failed:
        runner.run(["sh", "-c", "echo boom >&2; exit 5"])
    assert failed.value.returncode == 5 and "boom" in failed.value.stderr
    assert isinstance(failed.value, errors.BackendFailure)
    assert runner.run(["false"], check=False).returncode == 1


def test_runner_kills_on_timeout_and_reports_missing_tools():
    with pytest.raises(runner.CommandFailed, match="timed out"):
        runner.run(["sleep", "10"], timeout=0.2)
    with pytest.raises(runner.CommandFailed) as missing:
        runner.run(["no-such-tool-xyz"])
    assert missing.value.returncode == 127


def test_statefile_is_atomic_and_private(tmp_path):
    path = tmp_path / "sub" / "state.json"
    assert statefile.read_json(path, default={"x": 0}) == {"x": 0}
    statefile.write_json(path, {"a": 1})
    statefile.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"], "no temp file left behind"


@pytest.mark.parametrize("exc, code", [
    (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
    (errors.OutOfRange("x"), grpc.StatusCode.OUT_OF_RANGE),
    (errors.NoSpace("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.InUse("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Busy("x"), grpc.StatusCode.ABORTED),
    (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (runner.CommandFailed(["lvcreate"], 5, "no"), grpc.StatusCode.INTERNAL),
])
def test_every_error_has_its_code(exc, code):
    assert grpc_status.code_for(exc) == code


def test_error_details_are_kept():
    exc = errors.NoSpace("pool full", code=-28, method="bdev_lvol_create")
    assert exc.details == {"code": -28, "method": "bdev_lvol_create"}
    assert "code=-28" in str(exc)

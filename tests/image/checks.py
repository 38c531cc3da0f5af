"""The built image, on the host: its entry point runs every mode's --help (as root, and the
controller as the unprivileged user its pod runs as), the node plugin's tools are in it,
and nothing of the build's secrets stayed behind. Run by `make image-test` after
`lab/image.sh export`; tests/image/lab_checks.py drives the same tools on the lab kernel."""

from __future__ import annotations

import pytest

from tests.image.rootfs import MODES, NODE_TOOLS, ROOTFS, image_config, run


def test_the_entry_point_is_sluice_from_its_virtualenv():
    config = image_config()
    assert config["Entrypoint"] == ["sluice"] and config["Cmd"] == ["--help"]
    assert any(e.startswith("PATH=/opt/sluice/bin:") for e in config["Env"])
    out = run("sluice", "--help")
    assert out.returncode == 0 and "--mode" in out.stdout, out.stderr


@pytest.mark.parametrize("mode, flag", sorted(MODES.items()))
def test_every_mode_answers_help(mode, flag):
    out = run("sluice", f"--mode={mode}", "--help")
    assert out.returncode == 0 and flag in out.stdout, out.stdout + out.stderr


def test_the_controller_runs_as_the_unprivileged_user_of_its_pod():
    passwd = (ROOTFS / "etc" / "passwd").read_text()
    assert "sluice:x:65532:65532:" in passwd
    out = run("sluice", "--mode=controller", "--help", user="65532:65532")
    assert out.returncode == 0 and "--targets-config" in out.stdout, out.stderr


@pytest.mark.parametrize("tool", NODE_TOOLS)
def test_the_node_tools_are_in_the_image(tool):
    out = run("sh", "-c", f"command -v {tool}")
    assert out.returncode == 0 and out.stdout.strip(), f"{tool} is not on the image's PATH"


def test_the_build_secret_did_not_stay_in_the_image():
    assert not (ROOTFS / "run" / "secrets" / "pip-ca").exists()
    assert not any(e.startswith("PIP_CERT=") for e in image_config()["Env"])
    assert not list((ROOTFS / "opt" / "sluice").rglob("pip-ca"))

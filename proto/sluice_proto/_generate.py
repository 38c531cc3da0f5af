"""Regenerate the committed Python stubs from the .proto files beside this module.

    python -m sluice_proto._generate            # rewrite the stubs in place
    python -m sluice_proto._generate OUT_DIR    # write them under OUT_DIR/sluice_proto

Imports inside the stubs are absolute (``from sluice_proto import csi_pb2``) because
protoc is run with ``proto/`` as the include root.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INCLUDE_ROOT = PACKAGE_DIR.parent


def proto_files() -> list[Path]:
    return sorted(PACKAGE_DIR.glob("*.proto"))


def generate(out_root: Path = INCLUDE_ROOT) -> list[Path]:
    """Run protoc (grpcio-tools) for every .proto; return the files written."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / PACKAGE_DIR.name).mkdir(parents=True, exist_ok=True)
    for proto in proto_files():
        args = [
            "protoc",
            f"-I{INCLUDE_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(proto.relative_to(INCLUDE_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {proto.name}")
    return generated_files(out_root)


def generated_files(root: Path = INCLUDE_ROOT) -> list[Path]:
    out: list[Path] = []
    for proto in proto_files():
        stem = proto.stem
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            out.append(root / PACKAGE_DIR.name / f"{stem}{suffix}")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else INCLUDE_ROOT
    for path in generate(target):
        print(path)

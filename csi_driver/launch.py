"""`sluice`: the image's one entry point, the mode chosen by flag.

    sluice --mode=controller|node|all ...   the CSI driver (python -m csi_driver)
    sluice --mode=agent ...                  a storage node's target agent (python -m nvme_target)
    sluice certs --out DIR --agent-address A  the agents' mTLS certificates (sluice_common.certs)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sluice_common import daemon


def split_mode(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The --mode value and the other arguments."""
    args, mode, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--mode="):
            mode = arg.split("=", 1)[1]
        elif arg == "--mode" and i + 1 < len(argv):
            mode, i = argv[i + 1], i + 1
        else:
            args.append(arg)
        i += 1
    return mode, args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certs"]:
        from sluice_common.certs import main as certs
        return certs(argv[1:])
    mode, rest = split_mode(argv)
    if mode == "agent":
        from nvme_target.agent.serve import start
        from nvme_target.settings import from_args
        return daemon.main("sluice --mode=agent", from_args, start, rest)
    from csi_driver.server import start as start_driver
    from csi_driver.settings import from_args as driver_args
    return daemon.main("sluice", driver_args, start_driver, argv)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m csi_driver --mode controller|node|all`: run the Sluice CSI driver."""

import sys

from csi_driver.server import start
from csi_driver.settings import from_args
from sluice_common import daemon

if __name__ == "__main__":
    sys.exit(daemon.main("csi_driver", from_args, start))

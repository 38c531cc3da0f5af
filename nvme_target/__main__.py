"""`python -m nvme_target`: run the storage-node target agent."""

import sys

from nvme_target.agent.serve import start
from nvme_target.settings import from_args
from sluice_common import daemon

if __name__ == "__main__":
    sys.exit(daemon.main("nvme_target", from_args, start))

"""Everything the node writes into a kernel option string is checked here first.

The /dev/nvme-fabrics option string and mount(8)'s -o string are comma-separated
key=value lists: one `,` `=` or newline smuggled into a value adds options (another
host NQN, a different ctrl_loss_tmo, `rw`). So values come from a closed grammar, and
a bad one is INVALID_ARGUMENT naming the field before anything is written.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping

from csi_driver import params
from sluice_common.errors import InvalidArgument

# NVMe base spec 4.5: "nqn.yyyy-mm.<reverse domain>:<anything>", at most 223 bytes; we
# accept a conservative character set for the user part (no `,` `=` spaces or controls)
NQN = re.compile(r"nqn\.[0-9]{4}-[0-9]{2}\.[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[A-Za-z0-9._:@/+-]+)?")
NQN_MAX = 223
IFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
MOUNT_FLAG = re.compile(r"[A-Za-z0-9_.:/+@-]+(=[A-Za-z0-9_.:/+@-]+)?")
# flags that would undo what the node decides (read-only, journal handling) or change
# what mount(8) does
REFUSED_FLAGS = frozenset({"rw", "remount", "bind", "rbind", "move", "load", "recovery"})


def nqn(value: str, field: str) -> str:
    if len(value.encode()) > NQN_MAX or not NQN.fullmatch(value):
        raise InvalidArgument(f"{field}: {value!r} is not an NVMe qualified name (nqn.yyyy-mm.domain:name, "
                              f"at most {NQN_MAX} bytes, no ',', '=' or spaces)")
    return value


def address(value: str, field: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"{field}: {value!r} is not an IP address") from None


def port(value: str, field: str) -> str:
    if not re.fullmatch(r"[0-9]{1,5}", value) or not 0 < int(value) < 65536:
        raise InvalidArgument(f"{field}: port {value!r} is not a number from 1 to 65535")
    return str(int(value))


def ns_uuid(value: str, field: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(f"{field}: {value!r} is not a UUID") from None
    if str(parsed) != value.lower():
        raise InvalidArgument(f"{field}: {value!r} is not a UUID in canonical form")
    return str(parsed)


def iface(value: str, field: str) -> str:
    if value and not IFACE.fullmatch(value):
        raise InvalidArgument(f"{field}: {value!r} is not a network interface name")
    return value


def tunables(volume_context: Mapping[str, str]) -> dict[str, int]:
    """The nvme.* keys of a volume context, range-checked as the controller checks them
    (an unknown nvme.* key is refused too: a typo must not silently mean the default)."""
    given = {k: v for k, v in volume_context.items() if k.startswith("nvme.")}
    return dict(params.parse(given, "volume_context").nvme)


def mount_flags(flags: Iterable[str], field: str = "volume_capability.mount.mount_flags") -> tuple[str, ...]:
    for flag in flags:
        if not MOUNT_FLAG.fullmatch(flag):
            raise InvalidArgument(f"{field}: {flag!r} is not a mount option (one word, no ',' or spaces)")
        if flag.split("=", 1)[0] in REFUSED_FLAGS:
            raise InvalidArgument(f"{field}: {flag!r} is decided by the driver and cannot be given")
    return tuple(flags)

"""Kubernetes resource quantities as integers: "500Mi", "2G", "1.5Gi", "1e3", "1048576".

Binary suffixes (Ki, Mi, Gi, Ti, Pi, Ei) are powers of 1024; decimal ones (k, M, G, T,
P, E) powers of 1000. A fractional result is rounded up, as Kubernetes does.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from sluice_common.errors import InvalidArgument

_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_PATTERN = re.compile(r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E))?$")


def parse(value: str, field: str) -> int:
    """The quantity as an integer; InvalidArgument naming `field` when malformed."""
    match = _PATTERN.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise InvalidArgument(f"{field}: {value!r} is not a quantity (like 500Mi, 2G or 1048576)")
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number) * (Decimal(10) ** int(exponent[1:]) if exponent else _SUFFIX[suffix or ""])
    except InvalidOperation:
        raise InvalidArgument(f"{field}: {value!r} is not a quantity") from None
    return math.ceil(amount)

"""Topology keys every Sluice part agrees on, so a stock install schedules with no edits.

Every node plugin and every target report the fabric key (value "default" unless the
operator names fabrics), plus the zone key when the operator gives a zone. The controller
treats a target whose entry in the targets file has no topology as serving the default
fabric, so nodes and targets share a key out of the box: external-provisioner finds a
topology key on every node, WaitForFirstConsumer and Immediate claims both provision, and
a PV's node affinity keeps its pods on nodes that run the Sluice node plugin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sluice_common.errors import InvalidArgument

FABRIC_KEY = "csi.sluice.dev/fabric"
ZONE_KEY = "csi.sluice.dev/zone"
DEFAULT_FABRIC = "default"
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")


def default_segment() -> dict[str, str]:
    return {FABRIC_KEY: DEFAULT_FABRIC}


def segment(fabric: str, zone: str, pairs: Iterable[str], flag: str) -> dict[str, str]:
    """The segment from --fabric, --zone and repeatable KEY=VALUE `pairs` (given as `flag`)."""
    out = {FABRIC_KEY: _value(fabric, "fabric")}
    if zone:
        out[ZONE_KEY] = _value(zone, "zone")
    out.update(parse_pairs(pairs, flag))
    return out


def parse_pairs(items: Iterable[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InvalidArgument(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = _value(value, flag)
    return out


def _value(value: str, what: str) -> str:
    """A topology value becomes a Node label value: at most 63 alphanumerics, '-', '_', '.'."""
    if not _LABEL_VALUE.match(value):
        raise InvalidArgument(f"{what} {value!r}: a topology value is 1..63 letters, digits, '-', '_' "
                              "or '.', starting and ending with a letter or digit")
    return value

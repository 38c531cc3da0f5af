"""ListVolumes pages walked across targets without reading everything on every page.

Targets are visited in id order and each one's volumes in id order, so the CSI volume
id `<target id>/<volume id>` of the last entry handed out is the whole position: the
next page asks that target for volumes after it (Backend.list_volumes(start_after,
limit)), then the following targets, and fetches exports only for the volumes on the
page (list_exports(volume_ids)). A target that does not answer fails the page
(UNAVAILABLE naming it): a list never silently leaves a target out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from csi_driver import ids
from csi_driver.targets import Target
from nvme_target.model import Export, Volume
from sluice_common.errors import InvalidArgument, NotFound, StaleToken, Unavailable

Entry = tuple[Target, Volume, Export | None]


def page(targets: Sequence[Target], max_entries: int, token: str) -> tuple[list[Entry], str]:
    """One page of (target, volume, export) and the next token ("" at the end)."""
    if max_entries < 0:
        raise InvalidArgument("max_entries must not be negative")
    after_target, after_volume = _position(token)
    entries: list[Entry] = []
    for target in sorted((t for t in targets if t.id >= after_target), key=lambda t: t.id):
        start = after_volume if target.id == after_target else ""
        limit = max_entries - len(entries) + 1 if max_entries else 0  # one more: is there a next page?
        vols = _ask(target, target.reads.list_volumes, start, limit)
        if not vols:
            continue
        exports = {x.volume_id: x for x in _ask(target, target.reads.list_exports, [v.id for v in vols])}
        entries += [(target, v, exports.get(v.id)) for v in vols]
        if max_entries and len(entries) > max_entries:
            last = entries[max_entries - 1]
            return entries[:max_entries], ids.join(last[0].id, last[1].id)
    return entries, ""


def _position(token: str) -> tuple[str, str]:
    if not token:
        return "", ""
    try:
        return ids.split_volume(token)
    except NotFound:
        raise StaleToken(f"starting_token {token!r} was not issued by this plugin") from None


def _ask(target: Target, question: Callable, *args):
    try:
        return question(*args)
    except Unavailable as exc:
        raise Unavailable(f"target {target.id} did not answer, so the volume list would be incomplete: {exc}",
                          targets=target.id) from None

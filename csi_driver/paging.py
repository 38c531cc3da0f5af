"""ListVolumes / ListSnapshots pages: entries are sorted by id and a token is the last
id handed out, so a page boundary survives creates and deletes in between."""

from __future__ import annotations

from typing import TypeVar
from collections.abc import Callable, Sequence

from sluice_common.errors import InvalidArgument, StaleToken

T = TypeVar("T")


def page(entries: Sequence[T], key: Callable[[T], str], max_entries: int, token: str,
         token_valid: Callable[[str], bool]) -> tuple[list[T], str]:
    """(this page, next token or "")."""
    if max_entries < 0:
        raise InvalidArgument("max_entries must not be negative")
    if token and not token_valid(token):
        raise StaleToken(f"starting_token {token!r} was not issued by this plugin")
    ordered = sorted(entries, key=key)
    rest = [e for e in ordered if key(e) > token] if token else ordered
    if max_entries and len(rest) > max_entries:
        chunk = rest[:max_entries]
        return chunk, key(chunk[-1])
    return rest, ""

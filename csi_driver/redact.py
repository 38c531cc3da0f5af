"""Requests as loggable dicts: fields marked `csi_secret` in the CSI descriptors are
replaced by a count of their keys (read from the field option, not a hand-kept list),
and mount flags, which the spec says may be sensitive, likewise."""

from __future__ import annotations

from google.protobuf.message import Message

from sluice_proto import csi_pb2

SENSITIVE_NAMES = {"mount_flags"}


def loggable(message: Message) -> dict:
    out: dict = {}
    for field, value in message.ListFields():
        opts = field.GetOptions()
        if (opts.HasExtension(csi_pb2.csi_secret) and opts.Extensions[csi_pb2.csi_secret]) \
                or field.name in SENSITIVE_NAMES:
            out[field.name] = f"<{len(value)} redacted>"
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.type == field.TYPE_MESSAGE:
            out[field.name] = [loggable(v) for v in value] if field.is_repeated else loggable(value)
        else:
            out[field.name] = list(value) if field.is_repeated else value
    return out

"""SPDK's JSON-RPC errors as Sluice's typed errors: one table, keyed on (method, code,
message), because SPDK mixes negative errno values with JSON-RPC codes and reuses
"Invalid parameters" / "Internal error" for many causes. Every error keeps SPDK's
method, code and message in its details. Where the code alone cannot tell (the
ambiguous rows), the backend looks the state up before it decides (spdk/backend.py).
"""

from __future__ import annotations

from sluice_common.errors import (
    AlreadyExists, BackendFailure, FailedPrecondition, InUse, InvalidArgument, NoSpace, NotFound, SluiceError,
    Unavailable,
)
EAGAIN = "Resource temporarily unavailable"

ANY = "*"
# (method, code, message) -> error class, first match wins; ANY matches every method/message
TABLE: list[tuple[str, int, str, type[SluiceError]]] = [
    (ANY, -19, ANY, NotFound),                                          # No such device
    (ANY, -2, ANY, NotFound),                                           # No such file or directory
    (ANY, -17, ANY, AlreadyExists),                                     # File exists
    (ANY, -11, ANY, Unavailable),                                       # EAGAIN: retry
    # a limit change on a bdev with limits and no I/O channel (not exported), or while
    # SPDK is still setting QoS up on a new channel: retryable, never INTERNAL
    ("bdev_set_qos_limit", -32602, f"Failed to configure rate limit: {EAGAIN}", Unavailable),
    ("bdev_lvol_snapshot", -32602, "File exists", AlreadyExists),
    ("bdev_lvol_clone", -32602, "File exists", AlreadyExists),
    ("bdev_lvol_clone", -32602, "Invalid argument", InvalidArgument),  # source is not a snapshot
    (ANY, -32602, "No space left on device", NoSpace),
    ("bdev_lvol_resize", -32602, "Operation not permitted", FailedPrecondition),  # a snapshot
    ("bdev_lvol_delete", -32603, "Operation not permitted", InUse),    # a snapshot with 2+ clones
    ("bdev_lvol_create_lvstore", -1, ANY, FailedPrecondition),         # base bdev claimed
    ("nvmf_create_transport", -32603, ANY, AlreadyExists),
    ("nvmf_create_transport", -32602, ANY, InvalidArgument),
    ("bdev_set_qos_limit", -22, ANY, InvalidArgument),
    ("bdev_malloc_create", -22, ANY, InvalidArgument),
    # ambiguous: duplicate or invalid NQN; the backend checks nvmf_get_subsystems
    ("nvmf_create_subsystem", -32603, ANY, InvalidArgument),
    # ambiguous: duplicate host (add) / absent host (remove); the backend checks the subsystem
    ("nvmf_subsystem_add_host", -32603, "Internal error", AlreadyExists),
    ("nvmf_subsystem_remove_host", -32603, "Internal error", NotFound),
    # ambiguous: unknown subsystem/bdev/nsid/listener, bdev already exported, bad address
    (ANY, -32602, "Invalid parameters", InvalidArgument),
    (ANY, -32603, "spdk_json_decode_object failed", BackendFailure),  # client and target disagree
    ("keyring_file_add_key", -1, ANY, FailedPrecondition),            # the key file is not 0600
    ("keyring_file_remove_key", -126, ANY, NotFound),                  # Required key not available
    ("nvmf_subsystem_set_keys", -22, ANY, NotFound),                   # the host is not on the subsystem
]


def translate(method: str, code: int, message: str) -> SluiceError:
    cls = next((kind for m, c, msg, kind in TABLE
                if m in (ANY, method) and c == code and msg in (ANY, message)), BackendFailure)
    return cls(f"SPDK {method}: {message}", spdk_method=method, spdk_code=code, spdk_message=message)

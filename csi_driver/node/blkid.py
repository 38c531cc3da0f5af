"""Low-level signature probe of a device with libblkid, in process (what `blkid -p`
does, without a fork and exec: a Python-level exec costs ~0.1 s on a slow node, a
tenth of a NodeStageVolume). Superblocks and partition tables are both probed, with
libblkid's safe probe, so an ambivalent device is reported as such, never as blank.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from sluice_common.errors import FailedPrecondition

BLKID_PARTS_ENTRY_DETAILS = 1 << 2
KEYS = ("TYPE", "PTTYPE", "USAGE", "UUID", "LABEL")


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("blkid") or "libblkid.so.1", use_errno=True)
    lib.blkid_new_probe_from_filename.restype = ctypes.c_void_p
    lib.blkid_new_probe_from_filename.argtypes = [ctypes.c_char_p]
    for name in ("blkid_probe_enable_superblocks", "blkid_probe_enable_partitions",
                 "blkid_probe_set_partitions_flags"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.blkid_do_safeprobe.argtypes = [ctypes.c_void_p]
    lib.blkid_probe_lookup_value.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                             ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
    lib.blkid_free_probe.argtypes = [ctypes.c_void_p]
    return lib


def probe(device: str) -> dict[str, str]:
    """Signatures found on `device` ({} when blank). FailedPrecondition when it cannot be
    probed or holds conflicting signatures."""
    lib = _lib()
    pr = lib.blkid_new_probe_from_filename(device.encode())
    if not pr:
        raise FailedPrecondition(f"cannot probe {device}: errno {ctypes.get_errno()}")
    try:
        lib.blkid_probe_enable_superblocks(pr, 1)
        lib.blkid_probe_enable_partitions(pr, 1)
        lib.blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS)
        rc = lib.blkid_do_safeprobe(pr)
        if rc == 1:
            return {}
        if rc == -2:
            raise FailedPrecondition(f"{device} holds conflicting signatures (ambivalent probe)")
        if rc < 0:
            raise FailedPrecondition(f"cannot probe {device} (libblkid error)")
        found = {}
        for key in KEYS:
            value, size = ctypes.c_char_p(), ctypes.c_size_t()
            if lib.blkid_probe_lookup_value(pr, key.encode(), ctypes.byref(value), ctypes.byref(size)) == 0:
                found[key] = value.value.decode(errors="replace") if value.value else ""
        return found
    finally:
        lib.blkid_free_probe(pr)

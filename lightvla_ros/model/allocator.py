"""The process's memory allocator setting: changes CPU inference speed, never results. Torch-free, so that a
process can apply it before torch allocates anything."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from lightvla_ros.model.configuration import ALLOCATORS
from lightvla_ros.model.errors import InputError

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_allocations_on_heap() -> bool:
    """Make glibc's malloc reuse freed memory instead of unmapping and re-mapping it. Returns whether it applied.

    glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and unmaps them on free,
    so every forward pass page-faults its large activations in again (about 200k faults and 0.6 s of kernel time
    per unpruned 7b-shaped forward on the benchmark VM). With mmap disabled and a high trim threshold, freed blocks
    stay in the heap and are reused. The process keeps its peak memory; results are unchanged. Only glibc (Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def set_allocator(allocator: str) -> bool:
    """Apply an :data:`ALLOCATORS` choice process-wide; returns whether the process now uses it."""
    if allocator not in ALLOCATORS:
        raise InputError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    return allocator == "default" or keep_allocations_on_heap()

"""Keeps glibc from giving blockwise CPU inference fresh, page-faulting memory for every block.

glibc serves an allocation above its mmap threshold with a new mapping, and on free returns heap memory above its
trim threshold (twice the mmap threshold) to the kernel. Both start low and glibc raises them itself when a freed
mapping shows that the program uses bigger buffers (up to 32 MiB). Until then each block of a blockwise forward
(20-40 MB of intermediates) gets its memory back from the kernel as new pages: at batch 4 of the base model that
was about 700 MB of page faults per layer and a fifth of the forward's time. One 24 MiB malloc and free gives glibc
that evidence up front. A threshold set by the user (mallopt, MALLOC_MMAP_THRESHOLD_) switches glibc's adjustment
off, and then this changes nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os

HINT_BYTES = 24 * 2**20


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@functools.cache
def libc() -> ctypes.CDLL:
    """This process's C library with `malloc` and `free` typed for pointers."""
    lib = ctypes.CDLL(None)
    lib.malloc.restype = ctypes.c_void_p
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


@functools.cache
def raise_heap_thresholds() -> None:
    """One mapped allocation of HINT_BYTES, freed: glibc's mmap / trim thresholds become 24 / 48 MiB."""
    if is_glibc():
        libc().free(libc().malloc(HINT_BYTES))

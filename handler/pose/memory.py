"""Give back to the system the memory a request freed, so that a warm instance returns to its size.

glibc's allocator keeps freed memory in its heap for the next allocation (a 40 MP photo's buffers and
the pose runs' tensors: hundreds of MB, measured by build/bench_memory.py); ``malloc_trim`` returns it.
Where the C library is not glibc (a developer's Mac), ``release`` does nothing.
"""

from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release() -> None:
    """Return the heap's free memory to the system (a few milliseconds)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)

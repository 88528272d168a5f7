"""Host memory housekeeping shared by the data workers and the DeepSpeed adapter."""

from __future__ import annotations

import ctypes
import gc


def trim_heap(collect: bool = False) -> None:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed arenas mapped: a long-lived process that allocates and frees large buffers
    (a data worker tokenizing piece after piece, a process rebuilding DeepSpeed engines) then shows
    an RSS that grows with the work done, not with what it holds. ``collect`` first runs the
    garbage collector (reference cycles, e.g. an old engine's)."""
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass

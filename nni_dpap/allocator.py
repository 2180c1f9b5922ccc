"""Keep the CPU memory torch frees inside the process instead of page-faulting it back on every batch.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc returns large freed blocks
to the operating system (``munmap`` above ``M_MMAP_THRESHOLD``, heap trimming above
``M_TRIM_THRESHOLD``), so a training or inference loop whose activations are megabytes each
gets fresh pages every iteration and the kernel zero-fills them on first touch. For spiking
nets, whose activations are ``T`` times larger than an ANN's, this dominated: the paper's
MNIST SNN at ``T = 8``, batch 64, took 11,000-14,000 minor page faults per inference and
46-50 ms instead of 17-19 ms on 2 cores (the shrunk model 30-37 ms instead of 8-10 ms), and
the spread between runs of the same benchmark came mostly from there.

:func:`keep_freed_memory` asks glibc to serve every allocation from the heap and never to trim
it (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``), the effect of
PyTorch's usual CPU advice (jemalloc / tcmalloc via ``LD_PRELOAD``) without preloading
anything. The process then keeps its peak memory (resident size does not shrink after a
large batch). It changes the whole process, so the library never calls it on import:
``nni-dpap prune`` and the examples call it (``settings["keep_freed_memory"]``, default on),
the benchmarks call it for every method alike, and a user's own script may.

Only glibc (Linux) has these knobs; elsewhere the call does nothing and returns ``False``.
"""

from __future__ import annotations

import ctypes
import logging
import platform

_logger = logging.getLogger(__name__)

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed CPU memory in the process (see the module docstring).

    Returns
    -------
    bool
        Whether the setting is in effect (``False`` where the C library is not glibc).
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _logger.debug("keep_freed_memory: not glibc (%s), nothing changed", platform.libc_ver())
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname (find_library would spawn ldconfig)
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        _logger.debug("keep_freed_memory: no mallopt (%s)", exc)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        _logger.debug("keep_freed_memory: mallopt refused")
        return False
    _applied = True
    _logger.info("CPU memory freed by torch is kept in the process (glibc malloc: no mmap, no trimming)")
    return True

"""numba where it is usable, for every setting's kernel module: the ``njit`` decorator (a stand-in without numba)
and the test of whether kernels compile. Importing this module does not load numba (~0.3 s): the kernel modules are
imported only when a kernel is asked for, and ``njit`` loads numba then."""
from __future__ import annotations

import os


def njit(*args, **kwargs):
    """``numba.njit`` when numba is installed; else a stand-in that works both as ``@njit`` and as
    ``@njit(cache=True)`` and leaves the function plain Python (slow, same results)."""
    try:
        from numba import njit as numba_njit
    except ImportError:  # pragma: no cover - exercised only where numba is absent
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn
    return numba_njit(*args, **kwargs)


def numba_usable() -> bool:
    """Whether kernels compile: numba importable and JIT not disabled (``NUMBA_DISABLE_JIT``)."""
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return False
    try:
        import numba  # noqa: F401  (an import test: the kernels would load it anyway)
    except ImportError:
        return False
    return True

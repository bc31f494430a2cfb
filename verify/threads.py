"""How many BLAS threads a command uses: ``--threads`` of ``check-layer`` (and the batch's workers).

OpenBLAS' threads spin while they wait: several processes that each run as many BLAS threads as
there are cores slow each other down many times over (three concurrent ``check-layer`` on 2 cores:
27 s against 3.4 s with one thread each). :func:`blas_limit` caps the threads of every BLAS
library loaded in the process (``threadpoolctl``) inside a block; :func:`default_threads` is the
default of ``--threads``: ``$PTQ_BLAS_THREADS`` when set, otherwise the CPUs this process may run
on (``len(os.sched_getaffinity(0))``). Running several checks at once: give each ``--threads 1``,
or check them in one process with ``check-layer --batch`` (a pool of one-thread workers).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

__all__ = ["available_cpus", "default_threads", "blas_limit"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """``$PTQ_BLAS_THREADS`` if set (an integer ≥ 1), else :func:`available_cpus`."""
    env = os.environ.get("PTQ_BLAS_THREADS", "").strip()
    if env:
        n = int(env) if env.isdigit() else 0
        if n < 1:
            raise ValueError(f"PTQ_BLAS_THREADS must be an integer ≥ 1, got {env!r}")
        return n
    return available_cpus()


@contextmanager
def blas_limit(n: int):
    """At most ``n`` BLAS threads inside the block (every BLAS ``threadpoolctl`` finds)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an integer ≥ 1, got {n!r}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield

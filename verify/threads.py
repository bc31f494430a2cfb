"""How many BLAS threads a command uses: ``--threads`` of ``check-layer`` (and the batch's workers).

OpenBLAS' threads spin while they wait: several processes that each run as many BLAS threads as
there are cores slow each other down many times over (three concurrent ``check-layer`` on 2 cores:
27 s against 3.4 s with one thread each). :func:`blas_limit` caps the threads of every BLAS
library loaded in the process (``threadpoolctl``) inside a block; :func:`default_threads` is the
default of ``--threads``: ``$PTQ_BLAS_THREADS`` when set, otherwise *a share*.

The share (:class:`CpuShare`, what ``check-layer`` uses unless ``--threads`` or
``$PTQ_BLAS_THREADS`` fixes the number): every process that does BLAS work registers itself in a
per-user directory (``$PTQ_CPU_REGISTRY``, else ``<tmp>/ptq-bounds-cpu-<uid>``) with a file it
holds an exclusive ``flock`` on, and uses ``max(1, cpus // live registrations)`` threads, ``cpus``
the CPUs it may run on (``len(os.sched_getaffinity(0))``). A registration whose process died holds
no lock and is removed by the next count. The share is re-evaluated at every run of
``check-layer`` (:func:`rebalance`), so a process started alone gives up threads when others start
(and takes them back when they end) at its next run. Three concurrent ``check-layer`` then run
with one thread each on 2 cores, without anyone passing ``--threads 1`` (on 512 × 512 layers:
4.7–4.9 s each, against 8.3–8.5 s with two threads each and 2.9 s for one alone). Other programs' BLAS
threads are not counted: with those, fix ``--threads``. Where ``fcntl`` is missing (Windows) the
share is all the CPUs. ``check-layer --batch`` (a pool of one-thread workers) remains the fastest
way to check many layers.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["available_cpus", "default_threads", "blas_limit", "CpuShare", "rebalance", "registry_dir"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def fixed_threads() -> int | None:
    """``$PTQ_BLAS_THREADS`` if set (an integer ≥ 1), else ``None`` (no fixed number)."""
    env = os.environ.get("PTQ_BLAS_THREADS", "").strip()
    if env:
        n = int(env) if env.isdigit() else 0
        if n < 1:
            raise ValueError(f"PTQ_BLAS_THREADS must be an integer ≥ 1, got {env!r}")
        return n
    return None


def default_threads() -> int:
    """``$PTQ_BLAS_THREADS`` if set (an integer ≥ 1), else :func:`available_cpus`."""
    n = fixed_threads()
    return available_cpus() if n is None else n


def registry_dir() -> Path:
    """Where the processes sharing the CPUs register: ``$PTQ_CPU_REGISTRY``, else a per-user folder
    in the temporary directory."""
    env = os.environ.get("PTQ_CPU_REGISTRY", "").strip()
    if env:
        return Path(env)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"ptq-bounds-cpu-{uid}"


class CpuShare:
    """This process's share of the CPUs among the registered processes (module docstring).

    >>> with CpuShare() as share:
    ...     with blas_limit(share.threads()):
    ...         ...

    ``cpus``: the CPUs to share (default :func:`available_cpus`); ``directory``: the registry
    (default :func:`registry_dir`)."""

    def __init__(self, cpus: int | None = None, directory=None):
        self.cpus = available_cpus() if cpus is None else int(cpus)
        if self.cpus < 1:
            raise ValueError(f"cpus must be ≥ 1, got {cpus!r}")
        self.directory = Path(directory) if directory is not None else registry_dir()
        self.path, self._fd = None, None

    def __enter__(self) -> "CpuShare":
        try:
            import fcntl
        except ImportError:  # no flock: nothing to share, all the CPUs
            return self
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".lock", dir=self.directory)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # an unwritable registry: do not fail the work over it
            return self
        self.path, self._fd = Path(path), fd
        return self

    def __exit__(self, *exc) -> bool:
        if self._fd is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            os.close(self._fd)
            self.path, self._fd = None, None
        return False

    def live(self) -> int:
        """Live registrations, this one included (stale ones are removed)."""
        if self._fd is None:
            return 1
        import fcntl

        n = 0
        for p in self.directory.glob("*.lock"):
            if p == self.path:
                n += 1
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue  # removed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                n += 1  # held: its process is alive
            except OSError:
                pass
            else:  # nobody holds it: its process ended without removing it
                try:
                    p.unlink()
                except OSError:
                    pass
            finally:
                os.close(fd)
        return max(n, 1)

    def threads(self) -> int:
        """``max(1, cpus // live registrations)``."""
        return max(1, self.cpus // self.live())


_ACTIVE: list = []  # [(share, controller)] of the running shared_blas block


@contextmanager
def shared_blas(threads: int | None = None):
    """BLAS threads for a command: ``threads`` if given (or ``$PTQ_BLAS_THREADS``), fixed; else this
    process's :class:`CpuShare`, re-evaluated at every :func:`rebalance`. Yields the starting
    number of threads."""
    n = threads if threads is not None else fixed_threads()
    if n is not None:
        with blas_limit(n):
            yield n
        return
    import numpy  # noqa: F401 - load the BLAS libraries before threadpoolctl looks for them
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    with CpuShare() as share:
        controller = ThreadpoolController()
        start = share.threads()
        with controller.limit(limits=start, user_api="blas"):
            _ACTIVE.append((share, controller))
            try:
                yield start
            finally:
                _ACTIVE.pop()


def rebalance() -> int | None:
    """Inside :func:`shared_blas` with a share: set this process's BLAS threads to its current
    share and return it; elsewhere ``None`` (nothing changes)."""
    if not _ACTIVE:
        return None
    share, controller = _ACTIVE[-1]
    n = share.threads()
    controller.select(user_api="blas").limit(limits=n)  # undone when the shared_blas block ends
    return n


@contextmanager
def blas_limit(n: int):
    """At most ``n`` BLAS threads inside the block (every BLAS ``threadpoolctl`` finds)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an integer ≥ 1, got {n!r}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield

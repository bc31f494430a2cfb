"""Where campaign cells run: ``concurrent.futures``-style executors.

* ``"process"`` (default): local worker processes (``spawn``; BLAS limited to one thread per
  worker so that workers do not oversubscribe the cores; each worker exits when the process that
  started it is gone, so a ``kill -9`` of a campaign leaves no orphaned workers, and with them the
  ``multiprocessing`` resource tracker exits too);
* ``"serial"``: in this process (debugging, tests, one core);
* ``"dask"``: a Dask distributed cluster (``--scheduler ADDRESS``, or a ``LocalCluster`` when no
  address is given), through ``Client.get_executor()``; needs the ``dist`` extra.

Cells are pure functions of their configuration and seed, so every executor gives the same
results; only the main process writes to the store.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import threading
import time
from contextlib import contextmanager

__all__ = ["EXECUTORS", "executor"]

EXECUTORS = ("process", "serial", "dask")

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

#: cells a worker process runs before it is replaced by a fresh one (Python ≥ 3.11): a long-lived
#: worker's resident memory grows with the cells it ran (allocator fragmentation of differently sized
#: arrays; about 4 MB a cell on the real-LLM campaign), which once let a worker reach 9.6 GB after
#: some 1000 cells; replaced workers keep it near its starting size
TASKS_PER_WORKER = 200


def _one_blas_thread():
    """Worker initializer: one BLAS thread per worker process."""
    for v in _THREAD_VARS:
        os.environ[v] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


#: seconds between two looks of a worker at its parent
PARENT_POLL_S = 0.5


def _exit_with_parent(parent_pid: int, interval: float = PARENT_POLL_S) -> None:
    """In a worker: exit as soon as the process that started it (``parent_pid``) is gone.

    A watchdog thread compares ``os.getppid()`` with ``parent_pid`` (a worker whose parent died is
    re-parented, to init or a subreaper) and ends the worker with ``os._exit``; on Linux the kernel is
    also asked to send SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``), where ctypes and
    libc allow it. Portable: without prctl the watchdog alone does it."""
    _pdeathsig()
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="ptq-parent-watchdog", daemon=True).start()


def _pdeathsig() -> None:
    """Linux: SIGKILL this process when the thread that started it exits (best effort, silent otherwise).

    Used only with the watchdog: the kernel signal follows the creating *thread*, and the pool starts
    its workers from the thread that submits, which lives as long as the campaign."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except Exception:  # noqa: BLE001 - no libc prctl: the watchdog covers it
        pass


def _worker_init(parent_pid: int) -> None:
    """Worker initializer: one BLAS thread, and exit with the parent."""
    _exit_with_parent(parent_pid)
    _one_blas_thread()


class SerialExecutor(cf.Executor):
    """Runs each task at submission, in this process."""

    def submit(self, fn, /, *args, **kwargs):
        fut = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            if isinstance(exc, KeyboardInterrupt):
                raise
            fut.set_exception(exc)
        return fut


#: seconds to wait for a Dask scheduler before giving up (``--scheduler``)
SCHEDULER_TIMEOUT = 10.0


class SchedulerUnreachable(ValueError):
    """The Dask scheduler address cannot be reached (bad input: the message names ``--scheduler``)."""


def connect_scheduler(address: str, timeout: float | None = None):
    """A ``distributed.Client`` connected to ``address``; :class:`SchedulerUnreachable` (one line,
    naming ``--scheduler`` and the fix) when nothing answers within ``timeout`` seconds or the address
    is malformed."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ImportError(
            "the dask executor needs the 'dist' extra: pip install 'provable-ptq[dist]'"
        ) from exc
    timeout = SCHEDULER_TIMEOUT if timeout is None else timeout
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise SchedulerUnreachable(
            f"--scheduler: cannot reach a Dask scheduler at {address!r} within {timeout:g} s ({msg}); start one "
            "(`dask scheduler`) and pass its address, e.g. tcp://HOST:8786, or omit --scheduler for a local "
            "cluster"
        ) from None


@contextmanager
def executor(kind: str = "process", *, workers: int | None = None, scheduler: str | None = None):
    """Context manager yielding an executor of ``kind``."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if kind == "serial" or (kind == "process" and workers == 1):
        yield SerialExecutor()
        return
    if kind == "process":
        n = workers or os.cpu_count() or 1
        # workers are spawned lazily (at the first submissions), so the one-thread BLAS setting
        # must stay in the environment for the whole life of the pool; the initializer repeats it
        # in each worker before anything imports NumPy
        saved = {v: os.environ.get(v) for v in _THREAD_VARS}
        for v in _THREAD_VARS:
            os.environ[v] = "1"
        recycle = {"max_tasks_per_child": TASKS_PER_WORKER} if sys.version_info >= (3, 11) else {}
        pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"),
                                      initializer=_worker_init, initargs=(os.getpid(),), **recycle)
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        else:
            pool.shutdown(wait=True)
        finally:
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old
        return
    # dask
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(
            "the dask executor needs the 'dist' extra: pip install 'provable-ptq[dist]'"
        ) from exc
    cluster = None
    if scheduler:
        client = connect_scheduler(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        yield client.get_executor()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

"""Where runs execute: any ``concurrent.futures.Executor``, and ``execute`` to feed it and save each result.

By default a ``ProcessPoolExecutor`` with the "spawn" start method and one BLAS thread per worker
(OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS=1 are put in the workers' environment before they start, i.e. before they
import numpy), one worker per core, each keeping the memory its runs free for the next ones (glibc's ``mallopt``);
``workers=0`` runs serially in this process. A dask.distributed cluster works through ``client.get_executor()``.
The parent process saves the results, so workers need no shared file system.

No orphans. Each pool worker ends when its parent ends, however it ends (SIGKILL included): on Linux the kernel
sends it SIGTERM (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread exits it once ``os.getppid()``
changes. Workers point their stdout at /dev/null, so a pipe such as ``refvit reproduce … | cat`` closes with the
parent. While ``execute`` runs, SIGTERM in the parent raises SystemExit like Ctrl-C raises KeyboardInterrupt: the
runs finished so far are saved, and the pool's workers are terminated rather than left to finish their runs.
Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group): the parent alone handles it, ends them,
and raises ``Interrupted``, which says how many runs were saved where.
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait

from tqdm.auto import tqdm

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while ``execute`` ran; str() says what is saved ("37 of 120 runs of sweep quick are saved in DIR")."""


class SerialExecutor(Executor):
    """Runs each task at submit time in this process (``workers=0``; tests and debugging)."""

    def submit(self, fn, /, *args, **kwargs):
        fut = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - handed to the caller through the future, like a real executor
            fut.set_exception(e)   # KeyboardInterrupt and SystemExit are not caught: they stop the sweep at once
        return fut


@contextlib.contextmanager
def single_thread_env():
    """Put ``X_NUM_THREADS=1`` in os.environ while workers are spawned (they inherit it before importing numpy)."""
    old = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update({k: "1" for k in BLAS_ENV})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


PR_SET_PDEATHSIG = 1     # <linux/prctl.h>
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # <malloc.h> (glibc)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)              # the parent is gone (reparented): nobody will read this worker's result


def worker_init(parent: int) -> None:
    """Runs first in every pool worker: end with the parent (``parent`` = its pid), let go of its stdout, and (glibc)
    keep the memory its runs free for the next ones."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)   # the kernel signals us when the parent dies
        if hasattr(libc, "mallopt"):
            # Keep freed memory for the next run instead of handing it back to the kernel: a cell allocates tens of
            # MB of fresh arrays, and the first touch of every page handed back in between is a page fault
            # (docs/performance.md measures what this saves). Arrays up to 32 MiB (the most glibc's own adjustment
            # of the threshold reaches on 64-bit) then come from the heap rather than from mappings of their own,
            # and the heap is trimmed only past 1 GiB free. Memory held: about the worker's peak.
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
            libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    if os.getppid() != parent:
        os._exit(1)          # the parent died before the line above took effect
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle: it ends us with SIGTERM
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="refvit-parent-watchdog").start()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)      # workers print nothing; holding the parent's stdout would keep `| cat` waiting
    os.close(devnull)


class _Pool(ProcessPoolExecutor):
    """A process pool whose workers are born ignoring SIGINT: an ignored signal stays ignored across exec, and Python
    then installs no KeyboardInterrupt handler, so a Ctrl-C that reaches the process group while a worker is still
    starting up (before ``worker_init`` runs) cannot print a traceback from it."""

    def _spawn_process(self):
        if threading.current_thread() is not threading.main_thread():
            return super()._spawn_process()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)   # for the few ms of the spawn: the child inherits it
        try:
            return super()._spawn_process()
        finally:
            signal.signal(signal.SIGINT, old)


def _terminate_workers(ex: ProcessPoolExecutor) -> None:
    # concurrent.futures has no public way to stop running tasks; its worker processes are in ``_processes``
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()


@contextlib.contextmanager
def default_executor(workers: int | None = None):
    """A spawn-context process pool with single-threaded BLAS workers (``workers=0``: run serially here).

    Its workers end with this process (``worker_init``); leaving the context by an exception (Ctrl-C, SIGTERM)
    terminates them instead of waiting for their runs to finish."""
    workers = available_cores() if workers is None else workers
    if workers == 0:
        yield SerialExecutor()
        return
    with single_thread_env():
        ex = _Pool(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=worker_init, initargs=(os.getpid(),))
        try:
            yield ex
        except BaseException:
            _terminate_workers(ex)
            raise
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_as_exit():
    """While the body runs (in the main thread), SIGTERM raises SystemExit, so cleanup runs as after Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def executor_context(executor: Executor | None = None, workers: int | None = None):
    """``executor`` as a context that does not shut it down, or a new ``default_executor(workers)``."""
    return contextlib.nullcontext(executor) if executor is not None else default_executor(workers)


def execute(tasks: list, save, executor: Executor | None = None, workers: int | None = None,
            desc: str = "runs", progress: bool = True, total: int | None = None, window: int = 256,
            where=None) -> None:
    """Submit ``tasks`` [(fn, args, tag)] and call ``save(tag, result)`` in this process as each one finishes.

    At most ``window`` tasks are submitted ahead of the saved ones (1 for the serial executor, which runs a task as
    it is submitted), so killing the sweep loses at most the runs in flight: every computed run is saved first.
    Ctrl-C raises ``Interrupted`` naming how many runs are saved (in folder ``where``, when given). Without a
    progress bar (``progress=False``) one line on stderr says at the end how many runs were computed.
    """
    t0 = time.perf_counter()
    total = len(tasks) if total is None else total
    saved = total - len(tasks)
    bar = tqdm(total=total, initial=total - len(tasks), desc=desc, unit="run", disable=not progress,
               dynamic_ncols=True)
    with sigterm_as_exit(), executor_context(executor, workers) as ex:
        limit = 1 if isinstance(ex, SerialExecutor) else window
        todo, pending = iter(tasks), {}
        try:
            while True:
                for fn, args, tag in itertools.islice(todo, limit - len(pending)):
                    pending[ex.submit(fn, *args)] = tag
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    save(pending.pop(fut), fut.result())
                    saved += 1
                    bar.update(1)
        except BaseException as e:
            for fut in pending:
                fut.cancel()
            if isinstance(e, KeyboardInterrupt) and not isinstance(e, Interrupted):
                place = f" in {where}" if where else ""
                raise Interrupted(f"{saved} of {total} runs of {desc} are saved{place}") from None
            raise
        finally:
            bar.close()
    if not progress:
        print(f"{desc}: {total} runs, {len(tasks)} computed, {total - len(tasks)} already saved, "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)

"""Several targets of one run at once, in threads, and what Ctrl-C or SIGTERM does to them.

Threads, not processes: a backup's heavy work is pg_dump (a subprocess) and zstd and SHA-256
over its output, which release the GIL, and the rest is waiting on PostgreSQL and S3; threads
share the run's clients, secrets cache and notifier, where processes would each build their own
(infra/bench: parallel targets measures it).

A signal is delivered to the main thread only. The main thread waits here; when the signal
arrives it passes the same interruption to every running target's thread (the interpreter
raises it there at the next instruction), forwards the signal to this process's children
(pg_dump, pg_restore: a worker blocked reading a stopped dump only wakes when the pipe closes),
and waits for each target to clean up and record itself as a lone run does. Targets that had
not started never start. The interruption then goes up with every target's own line.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from drsentry.core.errors import Interrupted

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def run_in_parallel(
    work: Callable[[ItemT], ResultT], items: Sequence[ItemT], max_parallel: int
) -> list[ResultT]:
    """`work(item)` for every item, at most `max_parallel` at once; results in the items' order.

    Every item runs to its end even when another raised; then the first exception is raised.
    """
    running: dict[int, int] = {}  # item index -> thread id, while it runs
    lock = threading.Lock()

    def tracked(index: int, item: ItemT) -> ResultT:
        with lock:
            running[index] = threading.get_ident()
        try:
            return work(item)
        finally:
            with lock:
                running.pop(index, None)

    pool = ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="target")
    futures = [pool.submit(tracked, index, item) for index, item in enumerate(items)]
    try:
        wait(futures)
    except KeyboardInterrupt as exc:
        _interrupt(pool, futures, running, lock, exc)
    pool.shutdown(wait=True)
    return [future.result() for future in futures]


def _interrupt(
    pool: ThreadPoolExecutor,
    futures: list[Future[ResultT]],
    running: dict[int, int],
    lock: threading.Lock,
    exc: KeyboardInterrupt,
) -> None:
    signal_name, exit_code = (
        (exc.signal_name, exc.exit_code) if isinstance(exc, Interrupted) else ("SIGINT", 130)
    )

    class Forwarded(Interrupted):
        # The interpreter raises an exception class in another thread with no arguments.
        def __init__(self) -> None:
            super().__init__(signal_name, exit_code)

    pool.shutdown(wait=False, cancel_futures=True)
    with lock:
        threads = list(running.values())
    for thread_id in threads:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(Forwarded))
    _forward_to_children(signal.Signals[signal_name])
    started = [future for future in futures if not future.cancelled()]
    while True:
        try:
            wait(started)
            break
        except KeyboardInterrupt:
            continue  # a second Ctrl-C: the targets are already cleaning up; let them finish
    lines = []
    for future in started:
        failure = future.exception()
        if isinstance(failure, KeyboardInterrupt) and str(failure):
            lines.append(str(failure))
    not_started = len(futures) - len(started)
    if not_started:
        lines.append(f"{not_started} target(s) not started")
    raise Interrupted.of(exc, "; ".join(lines) or str(exc)) from exc


def _forward_to_children(signum: signal.Signals) -> None:
    """Send `signum` to this process's child processes (Linux: /proc lists them per thread)."""
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signum)

"""One thread that runs an engine's work in order, for servers that call from many threads.

Why: each thread that runs PyTorch ops on the CPU keeps an OpenMP team of its own. A server
(Gradio) calls handlers from a pool of threads, so it ends up with more teams than cores, and
then libgomp stops spinning between parallel regions: each small op waits on a wake-up and the
transformer runs ~1.4-1.8x slower (`python bench/threads.py`). Routing loads and generations
through one thread keeps one team. The thread is a daemon, so quitting never waits on a clip.
(The studio itself now computes in a worker process, `engine/worker.py`, on that process's main
thread, which keeps one team the same way.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass


@dataclass(frozen=True)
class _Raised:
    error: BaseException


class Either:
    """Set when either event is (the caller's cancel flag or the stream's own stop)."""

    def __init__(self, a: threading.Event, b: threading.Event):
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()


class ComputeThread:
    def __init__(self, name: str = "rushes-compute"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, args=(self._jobs,), name=name, daemon=True)
        self._thread.start()

    @staticmethod
    def _work(jobs: queue.SimpleQueue) -> None:
        while True:
            fn, future = jobs.get()
            try:
                future.set_result(fn())
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                future.set_exception(err)

    def here(self) -> bool:
        """Whether the calling thread is this compute thread."""
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], object]) -> Future:
        future = Future()
        self._jobs.put((fn, future))
        return future

    def call(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) on the compute thread; its result or its exception, here."""
        if self.here():
            return fn(*args, **kwargs)
        return self.submit(lambda: fn(*args, **kwargs)).result()

    def stream(self, make: Callable[[threading.Event], Iterator]) -> Iterator:
        """Iterate `make(stop)` on the compute thread, yielding its items here as they come.
        `stop` is set when this iterator is closed early: the producer should check it."""
        items, done, stop = queue.SimpleQueue(), object(), threading.Event()

        def produce():
            try:
                for item in make(stop):
                    items.put(item)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
                items.put(_Raised(err))
            items.put(done)

        self.submit(produce)
        try:
            while (item := items.get()) is not done:
                if isinstance(item, _Raised):
                    raise item.error
                yield item
        finally:
            stop.set()

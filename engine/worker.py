"""The engine in a process of its own: what the studio computes with.

Why: the studio's cold start was mostly imports, run one after the other under one interpreter
lock: gradio (~3.5 s) for the page, then diffusers (~4.2 s) and the model load for the first clip
(`python bench/startup.py`). `EngineProcess` starts a worker process first thing, before gradio
is imported, so the engine's imports and load run on the second core while the page is built.
It also keeps the page up when the engine dies (a crash, the OOM killer): what was in flight
fails with a message and the next request starts a new worker.

The worker computes on its main thread only: each thread that runs PyTorch ops on the CPU keeps
an OpenMP team of its own, and with more teams than cores libgomp stops spinning between parallel
regions, so each small op waits on a wake-up and the transformer ran ~1.4-1.8x slower from a
server's pool of handler threads (`python bench/threads.py`). A second thread reads the studio's
messages, so a cancel lands mid-clip.

Messages are pickles over a socket pair (plain pickle: tensors travel by value, not through
torch's shared-memory reductions). The studio sends `(id, kind, payload)`:
- "call": `fn(engine, *args, **kwargs)`, for a module-level `fn`; one result or one error back;
- "generate": a `GenerateRequest`; its events come back one by one;
- "stream": a `StreamRequest`; its chunks come back one by one;
- "cancel": sets that generation's or stream's cancel flag;
- "steer": a stream's new prompt, from its next chunk on.
The worker answers `(id, "item", event)` ..., then `(id, "return", value)` or `(id, "raise", err)`.

This module imports nothing heavy at the top: the studio imports it before torch and gradio.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path

_GONE = "gone"  # the reader's own message kind: the worker process went away


class EngineGone(RuntimeError):
    """The engine's process exited while a request was in flight."""


def _send(conn: Connection, lock: threading.Lock, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    with lock:
        conn.send_bytes(data)


def _portable(err: BaseException) -> BaseException:
    """The error itself when it survives a pickle round trip, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any error that cannot travel is described instead
        return RuntimeError(f"{type(err).__name__}: {err}")


class EngineProcess:
    """The studio's engine, served by a worker process; the same calls as `engine.generate.Engine`
    that the studio makes (generate, estimate, preload, call, options).

    `options`: an `engine.runtime.RuntimeOptions` or a dict of its fields (a dict needs no torch
    here, so the worker can start before anything heavy is imported)."""

    def __init__(self, options=None):
        self._fields = _fields(options)
        self._options = options if options is not None and not isinstance(options, dict) else None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # starting / replacing the worker
        self._send_lock = threading.Lock()
        self._pending: dict[int, tuple[queue.SimpleQueue, Connection]] = {}  # id -> (answers, its worker)
        self._conn: Connection | None = None
        self._proc: subprocess.Popen | None = None
        self._start()

    # --- the worker process ---------------------------------------------------------------
    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parent.parent)
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", "engine.worker", str(theirs.fileno())],
                                      pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = conn = Connection(ours.detach())
        _send(conn, self._send_lock, (0, "init", self._fields))
        threading.Thread(target=self._read, args=(conn, self._proc), name="rushes-engine-reader",
                         daemon=True).start()

    def _read(self, conn: Connection, proc: subprocess.Popen) -> None:
        while True:
            try:
                rid, kind, value = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            entry = self._pending.get(rid)
            if entry is not None:  # nobody listens to a cancelled stream's last events
                entry[0].put((kind, value))
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # its socket closed but it hangs: it serves nobody now
            proc.kill()
            code = proc.wait()
        with self._lock:
            if self._conn is conn:
                self._conn = None
            for box, theirs in list(self._pending.values()):
                if theirs is conn:
                    box.put((_GONE, code))

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop the worker (what it was computing is dropped)."""
        with self._lock:
            conn, proc, self._conn = self._conn, self._proc, None
        if conn is not None:
            with contextlib.suppress(OSError):  # wakes the reader thread, which close alone does not
                socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)
            conn.close()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _request(self, kind: str, payload) -> tuple[int, queue.SimpleQueue]:
        rid, box = next(self._ids), queue.SimpleQueue()
        with self._lock:
            if self._conn is None:  # the worker died since the last request: start a new one
                self._start()
            conn = self._conn
            self._pending[rid] = (box, conn)
        try:
            _send(conn, self._send_lock, (rid, kind, payload))
        except OSError:
            box.put((_GONE, self._proc.poll()))
        except BaseException:  # a payload that does not pickle: the caller's error, nothing pending
            self._pending.pop(rid, None)
            raise
        return rid, box

    @staticmethod
    def _gone(code) -> EngineGone:
        return EngineGone(f"the engine process exited (code {code}) before it answered; "
                          "the next request starts a new one")

    # --- what the studio calls ------------------------------------------------------------
    @property
    def options(self):
        if self._options is None:
            from engine.runtime import RuntimeOptions

            self._options = RuntimeOptions(**self._fields)
        return self._options

    @property
    def device(self) -> str:
        return self.options.resolved_device()

    def call(self, fn: Callable, *args, **kwargs):
        """fn(engine, *args, **kwargs) in the worker, on its engine; its result or its error here."""
        return self.submit(fn, *args, **kwargs).result()

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        """`call` without waiting: a Future of its result, answered by a thread of its own."""
        rid, box = self._request("call", (fn, args, kwargs))
        future = Future()

        def answer():
            kind, value = box.get()
            self._pending.pop(rid, None)
            if kind == "return":
                future.set_result(value)
            else:
                future.set_exception(value if kind == "raise" else self._gone(value))

        threading.Thread(target=answer, daemon=True).start()
        return future

    def preload(self, name: str) -> Future:
        """Start loading a model in the worker and return at once; a failed preload keeps
        nothing (the first request loads again and reports the error)."""
        return self.submit(_load, str(name))

    def estimate(self, req):
        """`Engine.estimate` in the worker: (MemoryEstimate, free bytes); ValueError on bad input."""
        return self.call(_estimate, req)

    def generate(self, req, cancel: threading.Event | None = None) -> Iterator:
        """The engine's events for `req`, as `Engine.generate` yields them. A set `cancel`, or a
        caller that stops listening, cancels the clip in the worker between steps."""
        yield from self._events("generate", req, cancel)

    def stream(self, req, cancel: threading.Event | None = None, prompt_now: Callable | None = None) -> Iterator:
        """A stream's chunks, as `Engine.stream` yields them; a set `cancel` ends it after the
        chunk being made, and each new value of `prompt_now()` is sent to steer it."""
        yield from self._events("stream", req, cancel, prompt_now)

    def _events(self, kind: str, req, cancel: threading.Event | None, prompt_now: Callable | None = None) -> Iterator:
        rid, box = self._request(kind, req)
        finished, steered = False, None
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    self._cancel(rid)
                    cancel = None  # told once; the worker's Failed("cancelled") follows
                if prompt_now is not None and (now := prompt_now()) and now != steered:
                    self._cancel(rid, "steer", now)
                    steered = now
                try:
                    kind, value = box.get(timeout=0.05)
                except queue.Empty:
                    continue
                if kind == "item":
                    yield value
                    continue
                finished = True
                if kind == "raise":
                    raise value
                if kind == _GONE:
                    from engine.events import Failed

                    yield Failed(str(self._gone(value)), kind="crashed")
                return
        finally:
            self._pending.pop(rid, None)
            if not finished:
                self._cancel(rid)

    def _cancel(self, rid: int, kind: str = "cancel", payload=None) -> None:
        """Tell the worker about request `rid` in flight: cancel it, or steer a stream."""
        conn = self._conn
        if conn is not None:
            try:
                _send(conn, self._send_lock, (rid, kind, payload))
            except OSError:
                pass


def _fields(options) -> dict:
    if options is None:
        return {}
    if isinstance(options, dict):
        return dict(options)
    from dataclasses import fields

    return {f.name: getattr(options, f.name) for f in fields(options)}


def _load(engine, name: str) -> None:
    engine.model(name)


def _estimate(engine, req):
    return engine.estimate(req)


# --- the worker's side ------------------------------------------------------------------------
def serve(conn: Connection) -> None:
    """Answer the studio's messages until it closes the connection."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    cancels: dict[int, threading.Event] = {}
    steers: dict[int, str] = {}  # a stream's newest prompt from the studio
    lock = threading.Lock()

    def read():
        while True:
            try:
                message = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                jobs.put(None)
                return
            rid, kind, _ = message
            if kind == "cancel":
                if rid in cancels:
                    cancels[rid].set()
                continue
            if kind == "steer":
                steers[rid] = message[2]
                continue
            cancels[rid] = threading.Event()
            jobs.put(message)

    threading.Thread(target=read, name="rushes-worker-reader", daemon=True).start()
    engine, failure = None, None
    while (message := jobs.get()) is not None:
        rid, kind, payload = message
        if kind == "init":
            try:
                from engine.generate import Engine
                from engine.runtime import RuntimeOptions

                engine = Engine(RuntimeOptions(**payload))
            except Exception as err:  # noqa: BLE001 - every request reports it
                failure = err
            continue
        try:
            answer = ("return", _answer(engine, failure, kind, payload, cancels[rid],
                                        lambda event: _send(conn, lock, (rid, "item", event)),
                                        lambda: steers.get(rid)))
        except _Lost:
            return
        except BaseException as err:  # noqa: BLE001 - handed to the studio
            answer = ("raise", _portable(err))
        finally:
            cancels.pop(rid, None)
            steers.pop(rid, None)
        try:
            _send(conn, lock, (rid, *answer))
        except OSError:
            return
        except Exception as err:  # noqa: BLE001 - a result that does not pickle
            _send(conn, lock, (rid, "raise", RuntimeError(f"could not send the result back: {err}")))


class _Lost(Exception):
    """The studio's end of the connection is gone."""


def _answer(engine, failure, kind: str, payload, cancel: threading.Event, emit: Callable,
            steer: Callable = lambda: None):
    """Run one request; generation and stream events go out through `emit` as they come."""
    if engine is None:
        raise failure or RuntimeError("the engine was not set up")
    if kind in ("generate", "stream"):
        events = (engine.generate(payload, cancel) if kind == "generate"
                  else engine.stream(payload, cancel, prompt_now=steer))
        for event in events:
            try:
                emit(event)
            except OSError as err:
                raise _Lost() from err
        return None
    fn, args, kwargs = payload
    return fn(engine, *args, **kwargs)

if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the studio's; the worker leaves with its socket
    serve(Connection(int(sys.argv[1])))

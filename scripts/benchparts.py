"""Timing helpers shared by the benchmarks: one call timed (or its memory sampled), and a set of
parts that run in a child process of their own.

Why a child process: in one process, torch's work slowed the XLA work that followed it, for longer
than any pause (on the 2-core machine, ResNet-50's LRP took 1.8-2.3 s in rounds that also ran zennit
and the torch forward, 1.5-1.6 s in rounds without them; a 3 s pause after the torch call did not
help). A benchmark that times both libraries in one process charges the second for the first's
threads and allocator; each side in its own process times only its own calls. The rounds still
interleave the two sides, so that load from elsewhere hits both alike.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any, Callable

MIB = 1024.0 * 1024.0


class RssPeak:
    """Peak resident-set growth (MiB) while the block runs, sampled by a thread."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak_mib = 0.0

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:  # not Linux: the process's lifetime peak only
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        self.base = self.rss()
        self.high = self.base
        self.stop = threading.Event()

        def sample():
            while not self.stop.is_set():
                self.high = max(self.high, self.rss())
                time.sleep(self.interval)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.high = max(self.high, self.rss())
        self.peak_mib = (self.high - self.base) / MIB
        return False


def timed(fn: Callable[[], Any], memory: bool = False) -> tuple[float, float]:
    """(seconds, peak resident-set growth in MiB or 0.0) of one call of fn. Memory is sampled only
    when asked: a sampling thread would slow the call it times on a machine with few cores."""
    if memory:
        with RssPeak() as peak:
            fn()
        return 0.0, peak.peak_mib
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, 0.0


def local(fn: Callable[[], Any]) -> Callable[..., tuple[float, float]]:
    """A part run in this process: ``part(memory) -> (seconds, MiB)``."""
    return lambda memory=False: timed(fn, memory)


def _serve(conn, factory: Callable[..., tuple[dict, dict]], args: tuple) -> None:
    parts, info = factory(*args)
    conn.send(info)
    while True:
        request = conn.recv()
        if request is None:
            return
        name, memory = request
        conn.send(timed(parts[name], memory))


class ChildParts:
    """Parts built by ``factory(*args) -> (parts: name -> callable, info: dict)`` in a child process
    (``spawn``: a fresh interpreter; factory must be a module-level function); :meth:`part` gives a
    callable with the interface of :func:`local`, timed in the child."""

    def __init__(self, factory: Callable[..., tuple[dict, dict]], *args: Any):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, factory, args), daemon=True)
        self.process.start()
        self.info: dict = self.conn.recv()

    def part(self, name: str) -> Callable[..., tuple[float, float]]:
        def run(memory: bool = False) -> tuple[float, float]:
            self.conn.send((name, memory))
            return self.conn.recv()

        return run

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=60)

"""``sms-gateway --workers N|auto``: N gateway processes on one port, supervised (SPEC §11).

Each worker is the ordinary gateway (``python -m gateway`` with the same flags) listening with
SO_REUSEPORT, so the kernel spreads connections over them; they share the store (SQLite on one
host, or PostgreSQL) and a folder for their metrics (so ``/metrics`` counts all of them, see
metrics.py) and nothing else: breakers are per worker, and each writes its own log file
(``gateway.log`` becomes ``gateway.w1.log``, ``gateway.w2.log``...; the supervisor itself writes
to the console). The supervisor migrates the store once before starting them, restarts a worker
that dies (logged, with a growing delay if it keeps dying), forwards SIGHUP (reload) to all, and
on SIGTERM/SIGINT lets every worker drain its in-flight sends, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from gateway.config import Config
from gateway.metrics import MULTIPROCESS

log = logging.getLogger("gateway.workers")

EXIT_CONFIG = 2
QUICK_DEATH = 5.0  # a worker that dies sooner than this after starting is restarted later...
MAX_DELAY = 30.0  # ...the delay doubling up to this
GRACE = 10.0  # seconds past shutdown_timeout before a worker that will not stop is killed


def count(text: str) -> int:
    """``auto`` (one per core) or a whole number >= 1: for argparse ``type=``."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= 256:
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r}: a number from 1 to 256, or auto")
    return number


def child_argv(words: Sequence[str]) -> list[str]:
    """The command line a worker gets: the supervisor's, without ``--workers``."""
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--workers":
            skip = True
        elif not word.startswith("--workers="):
            out.append(word)
    return out


def worker_file(file: str | None, index: int) -> str | None:
    """Worker ``index``'s log file beside the configured one: logs/gateway.log -> .w1.log."""
    if not file:
        return file
    path = Path(file)
    return str(path.with_name(f"{path.stem}.w{index}{path.suffix or '.log'}"))


def worker_loader(load: Callable[[], Config], index: int) -> Callable[[], Config]:
    """``load``, with ``logging.file`` made this worker's own (also on every reload: two
    processes rotating one file would lose lines)."""

    def loaded() -> Config:
        config = load()
        logging_ = dataclasses.replace(config.logging,
                                       file=worker_file(config.logging.file, index))
        return dataclasses.replace(config, logging=logging_)

    return loaded


@dataclasses.dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    delay: float = 1.0


class Supervisor:
    """Starts ``n`` workers and keeps them running until told to stop."""

    def __init__(self, n: int, argv: Sequence[str], shutdown_timeout: float,
                 metrics: str) -> None:
        self.workers = [_Worker(i) for i in range(1, n + 1)]
        self._metrics = metrics  # the workers' shared metrics folder (see metrics.py)
        self._argv = list(argv)
        self._shutdown_timeout = shutdown_timeout
        self._stopping = asyncio.Event()
        self._failed: int | None = None  # an exit code that stops everything (config errors)

    async def _spawn(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *self._argv, "--worker-index", str(worker.index),
            env={**os.environ, "SMS_GATEWAY_WORKER": str(worker.index),
                 MULTIPROCESS: self._metrics},
            # a group of its own: Ctrl-C reaches the supervisor only, which drains the workers
            # (a worker that got both would take the forwarded SIGTERM as a second signal)
            process_group=0)
        worker.started = loop.time()
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    async def _keep(self, worker: _Worker) -> None:
        """Run ``worker``; restart it whenever it dies, until stopping."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await self._spawn(worker)
            except OSError as exc:  # no process at all (out of memory, say): try again later
                log.error("worker %d could not be started: %s", worker.index, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), MAX_DELAY)
                continue
            assert worker.process is not None
            if self._stopping.is_set():  # told to stop while it was being started
                worker.process.send_signal(signal.SIGTERM)
            code = await worker.process.wait()
            # its gauges leave the sums (its counts stay: counters never go down)
            mark_process_dead(worker.process.pid, self._metrics)  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                return
            lived = loop.time() - worker.started
            how = _how(code)
            if code == EXIT_CONFIG and lived < QUICK_DEATH:
                log.error("worker %d (pid %d) could not start (%s): stopping every worker",
                          worker.index, worker.process.pid, how)
                self._failed = EXIT_CONFIG
                self.stop("worker failure")
                return
            worker.delay = min(worker.delay * 2, MAX_DELAY) if lived < QUICK_DEATH else 1.0
            wait = worker.delay if lived < QUICK_DEATH else 0.0
            log.error("worker %d (pid %d) died (%s) after %.1fs; restarting it%s",
                      worker.index, worker.process.pid, how, lived,
                      f" in {wait:.0f}s" if wait else "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    def stop(self, why: str) -> None:
        """Drain every worker (SIGTERM), restart none."""
        if self._stopping.is_set():
            self.forward(signal.SIGTERM)  # a second signal: the workers stop now too
            return
        log.info("%s: stopping %d workers (each finishes its in-flight sends)", why,
                 len(self.workers))
        self._stopping.set()
        self.forward(signal.SIGTERM)

    def forward(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every running worker."""
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    async def run(self) -> int:
        """Until SIGTERM/SIGINT (drained) or a worker that cannot start (exit 2)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.forward, signal.SIGHUP)
        log.info("supervising %d workers on one port (SO_REUSEPORT)", len(self.workers))
        keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
        await self._stopping.wait()
        await self._reap()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        log.info("all workers stopped")
        return self._failed or 0

    async def _reap(self) -> None:
        await asyncio.gather(*(self._reap_one(w) for w in self.workers))

    async def _reap_one(self, worker: _Worker) -> None:
        process = worker.process
        if process is None or process.returncode is not None:
            return
        deadline = self._shutdown_timeout + GRACE
        try:
            await asyncio.wait_for(process.wait(), deadline)
        except TimeoutError:
            log.error("worker %d (pid %d) did not stop in %.0fs: killed", worker.index,
                      process.pid, deadline)
            process.kill()
            await process.wait()


def _how(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


async def orphaned(every: float = 1.0) -> None:
    """Return once this worker's supervisor is gone (killed with SIGKILL, say): the worker
    then stops as on SIGTERM instead of serving on, unsupervised."""
    parent = os.getppid()
    # nothing signals a parent's death to a child: polling getppid() is the portable check
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(every)
    log.error("the supervisor (pid %d) is gone: stopping", parent)


async def supervise(n: int, words: Sequence[str], load: Callable[[], Config]) -> int:
    """The ``--workers`` parent: check the config, migrate the store once, run the workers."""
    from gateway.config import ConfigError
    from gateway.store import StoreConfigError, StoreError, upgrade

    try:
        config = load()
    except ConfigError as exc:
        log.error("invalid config, not starting:\n%s", exc)
        return EXIT_CONFIG
    storage = config.storage
    if storage.url != "memory":
        try:
            await upgrade(storage.url, base=storage.base)
        except StoreConfigError as exc:
            log.error("not starting: %s", exc)
            return EXIT_CONFIG
        except StoreError as exc:
            if not storage.url.startswith("postgres"):
                log.error("not starting: %s", exc)
                return EXIT_CONFIG
            log.warning("%s; the workers start anyway and wait for it", exc)
    else:
        log.warning("storage.url memory: each worker has its own store (tests only)")
    with tempfile.TemporaryDirectory(prefix="sms-gateway-metrics-") as metrics:
        return await Supervisor(n, child_argv(words), config.server.shutdown_timeout,
                                metrics).run()

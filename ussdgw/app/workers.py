"""Several gateway processes on one host under one supervisor: `ussdgw gateway --workers N`.

One gateway process uses one core (asyncio, one event loop). A host with more cores runs more
of them: each worker is a whole `ussdgw gateway` with its own binds to the SMSC, and they share
Redis, where everything they need to share already lives (any worker may receive any part of a
long MO, any receipt, and take over any MT whose sender died). The supervisor only starts them,
restarts one that dies, and stops them all:

- each worker runs `ussdgw ... gateway ... --worker I` in a session of its own, so that a Ctrl-C
  at the terminal reaches the supervisor alone, which then sends each worker one SIGTERM (an
  orderly stop: unbind, finish what is in flight) and SIGKILL to any still running after
  `stop_timeout_s`. A worker is tied to the supervisor's life (PR_SET_PDEATHSIG): a supervisor
  killed outright takes its workers with it, each stopping in order;
- a worker that exits by itself (crash, OOM kill, a bug) is started again after a backoff
  (`restart_min_s`, doubling to `restart_max_s`, back to the minimum once a worker has run for
  `stable_s`), so a worker that cannot start does not spin;
- worker I serves its self-care API, /metrics and /ready on `api_port + I - 1` (0 stays 0: any
  free port), so that each is scraped on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence

from ussdgw.link.backoff import Backoff
from ussdgw.logs import get_logger
from ussdgw.redis_server import die_with_parent
from ussdgw.tasks import Tasks

log = get_logger("ussdgw.app.workers")

STOP_TIMEOUT_S = 20.0
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 30.0


def worker_command(argv: Sequence[str], index: int) -> list[str]:
    """The command line of worker `index` (from 1): the supervisor's own, `--workers N` replaced by
    `--worker index` (a gateway option, so it goes last, after the subcommand's other options)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return [*out, "--worker", str(index)]


class Workers:
    """`count` worker processes, each `command(index)`, kept running until `stop` (module docstring)."""

    def __init__(self, command: Callable[[int], list[str]], count: int, *, env: dict[str, str] | None = None,
                 first: int = 1, stop_timeout_s: float = STOP_TIMEOUT_S, restart_min_s: float = RESTART_MIN_S,
                 restart_max_s: float = RESTART_MAX_S, stable_s: float = STABLE_S) -> None:
        self.command = command
        self.indexes = range(first, first + count)
        self.env = env
        self.stop_timeout_s = stop_timeout_s
        self.restart_min_s, self.restart_max_s, self.stable_s = restart_min_s, restart_max_s, stable_s
        self.processes: dict[int, asyncio.subprocess.Process] = {}  # the live process of each worker
        self.restarts = 0
        self._stopping = asyncio.Event()
        self._keepers = Tasks("workers")

    def start(self) -> None:
        for index in self.indexes:
            self._keepers.spawn(self._keep(index), name=f"worker-{index}")

    async def _keep(self, index: int) -> None:
        """Run worker `index`; whenever it ends by itself, start it again after the backoff."""
        backoff = Backoff(self.restart_min_s, self.restart_max_s)
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                process = await asyncio.create_subprocess_exec(
                    *self.command(index), env=self.env, stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=die_with_parent())
            except OSError as exc:
                log.error("worker_not_started", worker=index, error=str(exc))
                code: int | None = None
                lived = 0.0
            else:
                self.processes[index] = process
                started = loop.time()
                log.info("worker_started", worker=index, pid=process.pid)
                code = await process.wait()
                lived = loop.time() - started
                self.processes.pop(index, None)
            if self._stopping.is_set():
                log.info("worker_stopped", worker=index, returncode=code)
                return
            if lived >= self.stable_s:
                backoff.reset()
            delay = backoff.next()
            self.restarts += 1
            log.warning("worker_died", worker=index, returncode=code, lived_s=round(lived, 1),
                        restart_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def stop(self) -> None:
        """One SIGTERM to each worker, SIGKILL to those still running after `stop_timeout_s`;
        returns once every worker has ended (one being started meanwhile included)."""
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout_s
        signalled: set[int] = set()
        killed: set[int] = set()
        while len(self._keepers):
            for process in list(self.processes.values()):
                if process.returncode is not None or process.pid in killed:
                    continue
                with contextlib.suppress(ProcessLookupError):
                    if process.pid not in signalled:
                        process.send_signal(signal.SIGTERM)
                        signalled.add(process.pid)
                    elif loop.time() > deadline:
                        log.error("worker_killed", pid=process.pid, after_s=self.stop_timeout_s)
                        process.kill()
                        killed.add(process.pid)
            await self._keepers.wait(0.05)
        await self._keepers.stop()

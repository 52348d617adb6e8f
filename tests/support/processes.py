"""Commands run as real processes: started with a mark in their environment, their output read
line by line, and everything they leave behind found again by that mark (from /proc)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STARTUP_S = 30.0  # generous for a loaded CI machine; a healthy start takes about a second
STOP_S = 10.0  # an orderly stop takes well under a second; the HTTP drain is 2 s at most, twice


# ---- processes, from /proc ------------------------------------------------------------------
# Every process a test starts carries a mark (the test's tmp folder) in its environment, and so
# does everything those start in turn (the gateway processes of `load`); a redis-server writes its
# title over its environment, but that title names its socket, in the same folder. Whatever is
# left over is found by its mark, even after it has been handed over to init.
MARK = "USSDGW_TEST_PROCESS"


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int  # start time in clock ticks: a reused pid is another process
    cmdline: str

    def alive(self) -> bool:
        stat = proc_stat(self.pid)
        return stat is not None and stat[1] == self.started and stat[0] not in ("Z", "X")


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[0], int(fields[19])


def marked(mark: str) -> list[Proc]:
    """The live processes that carry `mark` in their environment or their command line."""
    needle = f"{MARK}={mark}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if mark not in cmdline and needle not in (entry / "environ").read_bytes():
                continue
        except OSError:  # gone meanwhile, or not ours to read
            continue
        stat = proc_stat(int(entry.name))
        if stat is not None and stat[0] not in ("Z", "X"):
            found.append(Proc(int(entry.name), stat[1], cmdline))
    return found


def left_over(mark: str, timeout: float = 5.0) -> list[Proc]:
    """The marked processes still alive after `timeout` (polled: they are on their way out)."""
    deadline = time.monotonic() + timeout
    while (alive := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def wait_process(mark: str, word: str, timeout: float = STARTUP_S) -> Proc:
    """A marked process with `word` in its command line, once it runs (polled: another process)."""
    deadline = time.monotonic() + timeout
    while not (found := [p for p in marked(mark) if word in p.cmdline]):
        assert time.monotonic() < deadline, f"no {word} process within {timeout:g} s"
        time.sleep(0.02)
    return found[0]


# ---- a command running as a process, its output read line by line ---------------------------
@dataclass
class Command:
    popen: subprocess.Popen[str]
    args: list[str]
    mark: str
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # "out", "err" once the stream is closed
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        for name, stream, lines in (("out", self.popen.stdout, self.out), ("err", self.popen.stderr, self.err)):
            threading.Thread(target=self._read, args=(name, stream, lines), daemon=True).start()

    def _read(self, name: str, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        stream.close()
        with self._changed:
            self.ended.add(name)
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return (f"$ ussdgw {' '.join(self.args)}\n--- stdout\n" + "\n".join(self.out) +
                    "\n--- stderr\n" + "\n".join(self.err))

    def wait_line(self, pattern: str, *, stderr: bool = False, timeout: float = STARTUP_S) -> re.Match[str]:
        """The first line (from the start) matching `pattern`, once it has been printed."""
        name, lines = ("err", self.err) if stderr else ("out", self.out)
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines:
                    if found := regex.search(line):
                        return found
                remaining = deadline - time.monotonic()
                if name in self.ended or remaining <= 0:
                    why = "the output ended" if name in self.ended else f"within {timeout:g} s"
                    raise AssertionError(f"no line matching {pattern!r} ({why})\n{self.output}")
                self._changed.wait(remaining)

    def wait_ended(self, timeout: float = STOP_S) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.ended) == 2, timeout), self.output

    def endpoints(self) -> dict[str, str]:
        """The "name  where" lines printed under "... is up:", once it has said so."""
        self.wait_line(r"^Ctrl-C stops everything\.")
        with self._changed:
            return dict(m.groups() for line in self.out if (m := re.match(r"^  (\w+)\s+(.+)$", line)))

    def finish(self, timeout: float = STOP_S) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout:g} s later\n{self.output}") from None
        self.wait_ended()
        return code


def run(ussdgw: Callable[..., Command], *args: str, timeout: float = STARTUP_S, **extra_env: str) -> Command:
    """A short command, run to its end."""
    command = ussdgw(*args, **extra_env)
    command.finish(timeout)
    return command


def assert_stops_cleanly(command: Command, *others_running: Command) -> None:
    """SIGINT: an orderly stop, exit 0 within seconds, nothing of it left behind."""
    mine = [p for p in marked(command.mark) if not any(p.pid == o.popen.pid for o in others_running)]
    command.popen.send_signal(signal.SIGINT)
    assert command.finish() == 0, command.output
    command.wait_line(r"^SIGINT: stopping .*Ctrl-C again quits at once", stderr=True, timeout=1)
    deadline = time.monotonic() + 5
    while (alive := [p for p in mine if p.alive()]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive, f"left running: {alive}\n{command.output}"
    assert "Traceback" not in command.output, command.output


def http_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])

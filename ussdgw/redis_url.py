"""What `REDIS_URL` may say, parsed once: one server, or the seed nodes of a Redis Cluster.

    redis://[user:password@]host[:port][/db]      one server over TCP (rediss:// with TLS)
    unix://[user:password@]/path/redis.sock[?db=N] one server on a Unix socket
    redis+cluster://[user:password@]host:port[,host:port...]
                                                  a Redis Cluster, found from these seed nodes
                                                  (rediss+cluster:// with TLS); the client reads
                                                  the rest of the cluster from any one of them

Anything else is refused with a message that says what was expected (the settings turn it into
one line naming `REDIS_URL`). The password never appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
SINGLE_SCHEMES = ("redis", "rediss", "unix")
FORMS = "redis://host:port, rediss://host:port, unix:///path/redis.sock or redis+cluster://host:port[,host:port...]"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the store's data lives: `url` for one server as redis-py reads it, or `nodes` of a cluster."""

    url: str
    cluster: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """`url` as a target; ValueError saying what is wrong (never with the password in it)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"expected a URL like {FORMS}")
    scheme = scheme.lower()
    if scheme in SINGLE_SCHEMES:
        return _single(url, scheme)
    if scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: expected {FORMS}")
    credentials, at, hosts = rest.rpartition("@")
    if not at:
        credentials, hosts = "", rest
    hosts, _, tail = hosts.partition("/")
    if tail.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0: drop the /path after the seed nodes")
    if "?" in hosts:
        raise ValueError("redis+cluster:// takes no query options")
    nodes = tuple(_node(part) for part in hosts.split(","))
    username, password = _credentials(credentials)
    return RedisTarget(url, True, nodes, username, password, CLUSTER_SCHEMES[scheme])


def _single(url: str, scheme: str) -> RedisTarget:
    parts = urlsplit(url)
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis/redis.sock")
    elif not parts.hostname:
        raise ValueError(f"{scheme}:// needs a host, e.g. {scheme}://127.0.0.1:6379/0")
    else:
        if "," in parts.netloc:
            raise ValueError("several hosts are seed nodes of a cluster: write redis+cluster://host:port,host:port")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{scheme}:// port must be a number from 1 to 65535") from None
        if port == 0:
            raise ValueError(f"{scheme}:// port must be a number from 1 to 65535")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"{scheme}:// database must be a number, e.g. {scheme}://127.0.0.1:6379/0")
    return RedisTarget(url, False, (), parts.username and unquote(parts.username),
                       parts.password and unquote(parts.password), scheme == "rediss")


def _node(part: str) -> tuple[str, int]:
    host, colon, port = part.strip().rpartition(":")
    if not colon or not host:
        raise ValueError(f"seed node {part.strip()!r} must be host:port")
    host = host.strip("[]")  # [::1]:7000
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"seed node {part.strip()!r}: port must be a number from 1 to 65535")
    return host, int(port)


def _credentials(raw: str) -> tuple[str | None, str | None]:
    if not raw:
        return None, None
    user, colon, password = raw.partition(":")
    if not colon:
        return unquote(user) or None, None  # as redis-py reads redis://user@host
    return unquote(user) or None, unquote(password)

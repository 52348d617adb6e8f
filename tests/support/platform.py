"""Helpers for tests that run against real Redis and a running stack (not fixtures: those are in
`tests/conftest.py`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import redis

from simulator.phones import InboxMessage
from ussdgw.app.stack import Stack
from ussdgw.store import Store

StoreFactory = Callable[..., Store]
PASSWORD = re.compile(r"Личный кабинет: (\S+)")  # the P1 password in the 3339 reply




def flush_cluster(url: str) -> None:
    """FLUSHALL on every primary of the cluster at `url`."""
    client = plain_client(url)
    try:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    finally:
        client.close()


def plain_client(url: str) -> Any:
    """A blocking redis-py client for a test's own look at the data: `Redis`, or `RedisCluster` for
    a cluster URL (the platform itself goes through `ussdgw.store.connect`)."""
    if url.startswith("redis+cluster://"):
        host, _, port = url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
        return redis.RedisCluster(host=host, port=int(port))
    return redis.Redis.from_url(url)


def all_keys(url: str, pattern: str) -> list[bytes]:
    """Every key matching `pattern`, from every primary of a cluster (a cluster client's plain
    KEYS asks one node only) or from the one server."""
    client = plain_client(url)
    try:
        if url.startswith("redis+cluster://"):
            return list(client.keys(pattern, target_nodes=redis.RedisCluster.PRIMARIES))
        return list(client.keys(pattern))
    finally:
        client.close()


def one_per_primary(url: str, count: int = 3) -> list[str]:
    """MSISDNs whose keys land on different primaries (a cluster's every primary, in its slot order);
    on a single Redis simply the first `count` candidates. Tests that must touch every shard use them."""
    candidates = (f"7916{n:07d}" for n in range(1, 10_000))
    if not url.startswith("redis+cluster://"):
        return [next(candidates) for _ in range(count)]
    client = plain_client(url)
    try:
        wanted = {node.name for node in client.get_primaries()}
        chosen: dict[str, str] = {}
        for msisdn in candidates:
            chosen.setdefault(client.get_node_from_key(f"sub:{{{msisdn}}}").name, msisdn)
            if set(chosen) == wanted:
                return sorted(chosen.values(), key=lambda m: client.keyslot(m))
    finally:
        client.close()
    raise AssertionError("no MSISDN found for some primary")


async def send_and_wait(stack: Stack, msisdn: str, to: str, text: str, *, count: int = 1,
                        timeout: float = 10.0) -> list[InboxMessage]:
    """A phone sends an MO; returns the first `count` replies that reach its inbox from `to`."""
    assert stack.smsc is not None
    phones = stack.smsc.phones
    after = phones.last_seq
    stack.smsc.submit_mo(msisdn, to, text)
    got: list[InboxMessage] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            fresh = await phones.wait_inbox(msisdn, after, timeout)
            for message in fresh:
                after = max(after, message.seq)
                if message.sender == to:
                    got.append(message)
    return got


def extract_password(text: str) -> str:
    """The password a 3339 reply carries."""
    match = PASSWORD.search(text)
    assert match, text
    return match.group(1)


async def eventually(check: Any, timeout: float = 10.0) -> None:
    """Retry an async assertion until it holds (receipts and reconnects arrive on their own)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await check()
                return
            except AssertionError:
                await asyncio.sleep(0.1)

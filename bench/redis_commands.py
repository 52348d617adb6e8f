"""Redis commands per MO, counted by Redis itself: what one MO costs the store, path by path.

    .venv/bin/python bench/redis_commands.py [--mos 100]

A whole platform in this process (SMSC simulator, gateway, a private redis-server); `--mos`
subscribers each send one MO and wait for its answer before the next one goes (no redelivery, no
recovery racing the count), for three paths: ПАРОЛЬ to 3339 (R1: D2 check, N2 membership, the
password's commit, a two-part SMS), HELLO to 5555 (the help reply) and the USSD dial *100#.
Printed per path: the commands per MO from `INFO commandstats` (commands inside Lua scripts
included), each command's share, and the gateway's round trips to Redis per MO (batches of its
auto-pipeline: with one MO at a time, each is a wait the MO's latency and CPU pay for).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
from pathlib import Path

import redis

from ussdgw.app.seed import seed_subscribers
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.redis_server import EmbeddedRedis

PATHS = (("3339", "ПАРОЛЬ", None), ("5555", "HELLO", None), ("*100#", "*100#", 1))


def command_calls(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in info.items()}


async def measure(mos: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ussdgw-commands-"))
    server = EmbeddedRedis(workdir / "redis", persistent=False)
    server.start()
    settings = Settings(redis_url=server.url, state_dir=str(workdir), secret_key=secrets.token_hex(32),
                        sim_port=0, sim_http_port=0, api_port=0, mt_lease_s=5.0, secret_cooldown_s=0,
                        secret_per_hour=mos + 10)
    stack = Stack(settings)
    try:
        await stack.start()
        assert stack.gateway is not None and stack.smsc is not None and stack.store is not None
        await stack.gateway.wait_bound(5)
        phones = [f"7916{i:07d}" for i in range(mos)]
        await seed_subscribers(stack.store, [{"msisdn": m} for m in phones])
        inbox = stack.smsc.phones
        for to, text, op in PATHS:
            before = command_calls(server.url)
            batches = stack.store.pipeline.batches
            for msisdn in phones:
                seq = inbox.last_seq
                stack.smsc.submit_mo(msisdn, to, text, ussd_service_op=op)
                async with asyncio.timeout(30):
                    while not await inbox.wait_inbox(msisdn, seq, 30):
                        pass
            await asyncio.sleep(1.5)  # the submit and receipt bookkeeping of the last MTs
            after = command_calls(server.url)
            trips = stack.store.pipeline.batches - batches
            spent = {name: after[name] - before.get(name, 0) for name in after
                     if after[name] - before.get(name, 0) and name != "info"}
            shares = ", ".join(f"{name} {count / mos:.2f}" for name, count in sorted(spent.items()))
            print(f"{text} to {to}: {sum(spent.values()) / mos:.2f} Redis commands per MO ({shares}); "
                  f"{trips / mos:.2f} round trips per MO")
    finally:
        await stack.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mos", type=int, default=100, help="MOs per path (one subscriber each)")
    asyncio.run(measure(parser.parse_args().mos))


if __name__ == "__main__":
    main()

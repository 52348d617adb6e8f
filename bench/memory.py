"""Bytes of Redis per subscriber, and how fast `ussdgw seed` imports them.

    .venv/bin/python bench/memory.py [--subscribers 50000] [--plain 400] [--active 100]

All on this machine, a private redis-server (`REDIS_URL` to use another):

1. writes a JSON Lines base of `--subscribers` subscribers (owner, passport, contract, region,
   balance, tariff, e-mail, a pre-hashed code word) and runs `ussdgw seed` on it as a process:
   subscribers/s over the whole command (start to exit), and over the import itself (its
   `seed_done` log line); then a base of `--plain` subscribers whose code words come in plain
   text, hashed by the command's process pool (scrypt, ~50 ms each by design);
2. idle: MEMORY USAGE summed over each seeded subscriber's keys (`sub:{msisdn}*`), and Redis's
   `used_memory` growth divided by the number of subscribers (which also counts the key space's
   own overhead);
3. active: `--active` of them each get one password (ПАРОЛЬ to 3339) and walk one USSD dialogue
   (*111#, then 1: the balance) through the SMSC simulator and the gateway over SMPP; then the
   same sum over their keys, per kind of key (the D2 counters, MO marks and MT states expire:
   1 h, 24 h, 3 days), and the receipt-correlation keys `dlr:<id>` (3 days) apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from sms_codes import hash_password  # noqa: E402
from ussdgw import logs  # noqa: E402
from ussdgw.app.stack import Stack  # noqa: E402
from ussdgw.config import Settings  # noqa: E402
from ussdgw.redis_server import EmbeddedRedis  # noqa: E402
from ussdgw.smpp.pdu import UssdOp  # noqa: E402


def write_base(path: Path, count: int, *, first: int, plain: bool) -> list[str]:
    hashed = hash_password("сирень")
    numbers = []
    with path.open("w", encoding="utf-8") as out:
        for i in range(first, first + count):
            msisdn = f"7916{i:07d}"
            entry = {"msisdn": msisdn,
                     "owner": {"id": f"p-{i}", "name": "Иван Петров", "passport": f"45{i % 100:02d} {i:06d}",
                               "contract": f"D-2021-{i:07d}"},
                     "region": "77", "balance": 250.5, "tariff": "smart", "email": f"user{i}@example.com"}
            if plain:
                entry["code_word"] = f"сирень{i}"
            else:
                entry["code_word_hash"] = hashed
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            numbers.append(msisdn)
    return numbers


def seed(path: Path, url: str, state: Path) -> tuple[float, dict[str, object]]:
    """Run `ussdgw seed`; (wall seconds, its seed_done log line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USSDGW_")}
    env.update(REDIS_URL=url, USSDGW_STATE_DIR=str(state), USSDGW_LOG_FORMAT="json",
               USSDGW_SECRET_KEY=secrets.token_hex(32))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ussdgw.app", "seed", str(path)], env=env, capture_output=True,
                          text=True, check=True)
    wall = time.monotonic() - started
    line = next(json.loads(x) for x in done.stderr.splitlines() if '"seed_done"' in x)
    return wall, line


async def key_bytes(db: aioredis.Redis, msisdns: list[str]) -> dict[str, list[int]]:
    """Bytes per kind of key (`sub`, `audit`, `mtstate`, ...) summed per subscriber: one SCAN over the
    key space, MEMORY USAGE of each key of the subscribers asked for."""
    wanted = set(msisdns)
    found: dict[str, dict[str, int]] = {m: defaultdict(int) for m in msisdns}
    async for key in db.scan_iter(match="sub:{*", count=1000):
        msisdn, _, rest = key.decode().removeprefix("sub:{").partition("}")
        if msisdn not in wanted:
            continue
        kind = re.sub(r"^(mo|rl|parts):.*", r"\1:*", rest.lstrip(":") or "sub")
        found[msisdn][kind] += int(await db.memory_usage(key, samples=0) or 0)
    per_kind: dict[str, list[int]] = defaultdict(list)
    for kinds in found.values():
        kinds["all"] = sum(kinds.values())
        for kind, used in kinds.items():
            per_kind[kind].append(used)
    return per_kind


def mean(values: list[int], n: int) -> float:
    return sum(values) / n if n else 0.0


async def activity(url: str, state: Path, msisdns: list[str]) -> None:
    """One password and one USSD dialogue per subscriber, through the simulator and the gateway."""
    settings = Settings(redis_url=url, state_dir=str(state), secret_key=secrets.token_hex(32), sim_port=0,
                        sim_http_port=0, api_port=0, log_level="warning")
    stack = Stack(settings)
    await stack.start()
    try:
        assert stack.smsc is not None and stack.gateway is not None
        await stack.gateway.wait_bound(5)
        phones = stack.smsc.phones
        for msisdn in msisdns:
            steps = (("3339", "ПАРОЛЬ", None, "sms"), ("*111#", "*111#", UssdOp.PSSR_INDICATION, "ussd"),
                     ("*111#", "1", UssdOp.USSR_CONFIRM, "ussd"))
            for to, text, op, kind in steps:
                after = phones.last_seq
                stack.smsc.submit_mo(msisdn, to, text, **({"ussd_service_op": op} if op is not None else {}))
                async with asyncio.timeout(10):
                    while not any(m.kind == kind for m in await phones.wait_inbox(msisdn, after, 10)):
                        pass
        await asyncio.sleep(0.5)  # the last receipts recorded
    finally:
        await stack.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--plain", type=int, default=400, help="subscribers whose code words are hashed by seed")
    parser.add_argument("--active", type=int, default=100)
    args = parser.parse_args()
    logs.configure("warning", "console")
    sys.stdout.reconfigure(line_buffering=True)  # each figure as soon as it is measured
    with tempfile.TemporaryDirectory(prefix="ussdgw-memory-") as tmp:
        folder = Path(tmp)
        server = None
        url = os.environ.get("REDIS_URL", "")
        if not url:
            server = EmbeddedRedis(folder / "redis", persistent=False)
            server.start()
            url = server.url
        db = aioredis.Redis.from_url(url)
        try:
            await db.flushall()
            empty = int((await db.info("memory"))["used_memory"])
            base = write_base(folder / "base.jsonl", args.subscribers, first=0, plain=False)
            wall, line = seed(folder / "base.jsonl", url, folder / "state")
            print(f"import, pre-hashed code words: {len(base):,} subscribers in {wall:.1f} s = "
                  f"{len(base) / wall:,.0f}/s for the whole command; {line['per_second']:,}/s importing "
                  f"({line['seconds']} s)")
            used = int((await db.info("memory"))["used_memory"]) - empty
            idle = await key_bytes(db, base[:: max(1, len(base) // 2000)])
            sampled = len(idle["all"])
            print(f"idle subscriber: {mean(idle['all'], sampled):.0f} B by MEMORY USAGE over its keys "
                  f"(profile {mean(idle['sub'], sampled):.0f} B, audit {mean(idle['audit'], sampled):.0f} B; "
                  f"{sampled} sampled); used_memory growth {used / len(base):.0f} B per subscriber")
            encoding = (await db.object("encoding", f"sub:{{{base[0]}}}")).decode()
            print(f"profile hash encoding: {encoding}")
            if args.plain:
                plain = write_base(folder / "plain.jsonl", args.plain, first=len(base), plain=True)
                wall, line = seed(folder / "plain.jsonl", url, folder / "state")
                print(f"import, plain code words hashed by seed ({os.cpu_count()} cores): {len(plain):,} in "
                      f"{wall:.1f} s = {len(plain) / wall:,.0f}/s for the whole command; {line['per_second']:,}/s "
                      f"importing")
            active = base[: args.active]
            await activity(url, folder / "state", active)
            after = await key_bytes(db, active)
            kinds = sorted(k for k in after if k != "all")
            n = len(active)
            parts = ", ".join(f"{k} {mean(after[k], n):.0f}" for k in kinds)
            dlr = [k async for k in db.scan_iter(match="dlr:*", count=1000)]
            dlr_bytes = sum([int(await db.memory_usage(k, samples=0) or 0) for k in dlr])
            print(f"after one password and one USSD dialogue: {mean(after['all'], n):.0f} B per subscriber "
                  f"({parts}); plus {dlr_bytes / n:.0f} B of dlr:<id> receipt keys ({len(dlr)} keys, 3 days)")
        finally:
            await db.aclose()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())

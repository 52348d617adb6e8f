"""Self-care API throughput and latency on loopback: top-ups, and bonus gifts end to end.

    .venv/bin/python bench/selfcare.py [--subscribers 50] [--concurrency 50] [--requests 2000]

One process runs the whole stack (private redis-server, SMSC simulator, gateway, self-care API)
on free 127.0.0.1 ports, exactly as `ussdgw up` does. Subscribers sign in by header enrichment
(the bench's own trusted network is 127.0.0.0/8), so no scrypt is in the measured path.
Printed, for `--requests` requests at `--concurrency` in flight: requests/s and p50/p99 latency of
  1. POST /top-ups (one Lua script each),
  2. POST /gifts (hold script + offer script with a sealed SMS, then the SMS over SMPP),
and whether the point and money totals came out exact.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from ussdgw import logs  # noqa: E402
from ussdgw.app.stack import Stack  # noqa: E402
from ussdgw.config import Settings  # noqa: E402
from ussdgw.store import AuditEvent  # noqa: E402


def report(name: str, samples: list[float], wall: float) -> None:
    ordered = sorted(samples)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    print(f"{name:<10} {len(samples) / wall:8.0f} req/s   p50 {statistics.median(ordered) * 1000:6.1f} ms"
          f"   p99 {p99 * 1000:6.1f} ms   ({len(samples)} requests in {wall:.2f} s)")


async def main(args: argparse.Namespace) -> None:
    logs.configure("warning", "json")
    state = tempfile.mkdtemp(prefix="selfcare-bench-")
    settings = Settings(state_dir=state, sim_port=0, sim_http_port=0, api_port=0, secret_cooldown_s=0,
                        secret_per_hour=100_000, api_trusted_networks="127.0.0.0/8", log_level="warning")
    stack = Stack(settings)
    await stack.start()
    assert stack.store is not None and stack.gateway is not None
    await stack.gateway.wait_bound(10)
    api = stack.endpoints["selfcare"]
    people = [f"7916{i:07d}" for i in range(args.subscribers)]
    for m in people:
        await stack.store.subscribers.put(m, {"owner_id": f"p-{m}", "balance_kop": 0, "bonus_points": 10_000,
                                             "tariff": "basic"}, AuditEvent("seeded", "admin"))
    rng = random.Random(1)
    limit = asyncio.Semaphore(args.concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as http:
        tokens = {}
        for m in people:
            async with http.post(f"{api}/sessions/network", headers={"X-MSISDN": m}) as r:
                tokens[m] = (await r.json())["data"]["token"]

        async def post(samples: list[float], path: str, who: str, body: dict[str, object]) -> int:
            """One request; its latency counts from when it may go (at most `concurrency` in flight)."""
            async with limit:
                started = time.perf_counter()
                async with http.post(f"{api}{path}", json=body,
                                     headers={"Authorization": f"Bearer {tokens[who]}"}) as r:
                    await r.read()
                samples.append(time.perf_counter() - started)
                return r.status

        top_ups = [(rng.choice(people), rng.randint(100, 100_000)) for _ in range(args.requests)]
        samples: list[float] = []
        started = time.perf_counter()
        statuses = await asyncio.gather(*(post(samples, "/accounts/me/top-ups", m, {"amount_kop": a})
                                          for m, a in top_ups))
        report("top-ups", samples, time.perf_counter() - started)
        assert set(statuses) == {200}, set(statuses)

        gifts = [(*rng.sample(people, 2), rng.randint(1, 20)) for _ in range(args.requests)]
        samples = []
        started = time.perf_counter()
        statuses = await asyncio.gather(*(post(samples, "/accounts/me/gifts", s, {"to": r, "points": p})
                                          for s, r, p in gifts))
        report("gifts", samples, time.perf_counter() - started)
        ok = statuses.count(202)
    await asyncio.sleep(0)
    final = [await stack.store.subscribers.fields(m) for m in people]
    held = sum(p for (_, _, p), s in zip(gifts, statuses, strict=True) if s == 202)
    money = sum(int(f["balance_kop"]) for f in final)
    points = sum(int(f["bonus_points"]) for f in final)
    accrued = sum(a // 1000 for _, a in top_ups)
    print(f"gifts accepted by the API: {ok}/{len(gifts)}; money exact: {money == sum(a for _, a in top_ups)}; "
          f"points exact (balances + held): {points + held == 10_000 * len(people) + accrued}")
    await stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))

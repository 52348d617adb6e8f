"""The benchmark's load generator: a minimal SMSC that drives a gateway with MOs over SMPP.

It runs in its own process (so its CPU is not the gateway's), accepts any bind, sends
`deliver_sm` MOs from pre-built bytes (no codec on its hot path), answers every `submit_sm` at
once with `submit_sm_resp` (and, with --receipts, a delivery receipt) and times each MO from the
moment its `deliver_sm` is written to the moment the last part of its reply MT arrives.

Phases, run in order once --binds binds are up:
  closed   keep --inflight MOs outstanding for --seconds: the most the gateway can do
  open     send at --rate MOs per second for --seconds: latency at a fixed load

It prints one JSON line per event on stdout (`listening`, `phase_start`, `phase_end`, `result`)
so that the orchestrator (`bench/roundtrip.py`) can sample CPU at the phase boundaries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from dataclasses import dataclass, field

from simulator.load import percentile

HEADER = struct.Struct(">IIII")
BIND_TRANSCEIVER, BIND_RECEIVER, BIND_TRANSMITTER = 0x09, 0x01, 0x02
SUBMIT_SM, DELIVER_SM, DELIVER_SM_RESP = 0x04, 0x05, 0x80000005
UNBIND, ENQUIRE_LINK = 0x06, 0x15
MSISDN_BASE = 79_000_000_000
MSISDN_POOL = 1_000_000


def out(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def c_octet(value: bytes) -> bytes:
    return value + b"\x00"


def deliver_sm(sequence: int, msisdn: bytes, to: bytes, text: bytes, reference: int) -> bytes:
    body = b"".join((
        c_octet(b""), b"\x01\x01", c_octet(msisdn), b"\x00\x00", c_octet(to),
        b"\x00\x00\x00", c_octet(b""), c_octet(b""), b"\x00\x00\x00\x00", bytes([len(text)]), text,
        struct.pack(">HHH", 0x0204, 2, reference & 0xFFFF),
    ))
    return HEADER.pack(16 + len(body), DELIVER_SM, 0, sequence) + body


def receipt(sequence: int, msisdn: bytes, to: bytes, message_id: bytes) -> bytes:
    text = b"id:" + message_id + b" sub:001 dlvrd:001 submit date:2501010000 done date:2501010000 stat:DELIVRD err:000"
    body = b"".join((
        c_octet(b""), b"\x01\x01", c_octet(msisdn), b"\x00\x00", c_octet(to),
        b"\x04\x00\x00", c_octet(b""), c_octet(b""), b"\x00\x00\x00\x00", bytes([len(text)]), text,
        struct.pack(">HH", 0x001E, len(message_id) + 1), c_octet(message_id),
        struct.pack(">HHB", 0x0427, 1, 2),
    ))
    return HEADER.pack(16 + len(body), DELIVER_SM, 0, sequence) + body


def submit_destination(body: bytes) -> tuple[bytes, int, int]:
    """(destination_addr, parts in this MT, number of this part) from a submit_sm body."""
    pos = body.index(b"\x00") + 3  # service_type, source ton/npi
    pos = body.index(b"\x00", pos) + 3  # source_addr, dest ton/npi
    end = body.index(b"\x00", pos)
    destination = body[pos:end]
    esm_class = body[end + 1]
    pos = end + 4  # esm_class, protocol_id, priority_flag
    pos = body.index(b"\x00", pos) + 1  # schedule_delivery_time
    pos = body.index(b"\x00", pos) + 5  # validity_period, registered_delivery .. sm_default_msg_id
    length = body[pos]
    message = body[pos + 1 : pos + 1 + length]
    if esm_class & 0x40 and length > 5:
        if message[1] == 0x00:
            return destination, message[4], message[5]
        if message[1] == 0x08:
            return destination, message[5], message[6]
    return destination, 1, 1


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0
    nacked: int = 0
    completed: int = 0
    submits: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ack_latencies_ms: list[float] = field(default_factory=list)


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.links: list[Link] = []
        self.all_bound = asyncio.Event()
        self.in_flight: dict[bytes, float] = {}
        self.parts_seen: dict[bytes, int] = {}
        self.space = asyncio.Event()
        self.stats = Stats()
        self.counter = 0
        self.next_link = 0
        self.message_ids = 0
        self.to = args.to.encode()
        self.text = args.text.encode()

    def bound(self, link: Link) -> None:
        self.links.append(link)
        if len(self.links) >= self.args.binds:
            self.all_bound.set()

    def send_one(self) -> None:
        while True:
            self.counter += 1
            msisdn = str(MSISDN_BASE + self.counter % MSISDN_POOL).encode()
            if msisdn not in self.in_flight:
                break
        link = self.links[self.next_link % len(self.links)]
        self.next_link += 1
        now = time.perf_counter()
        self.in_flight[msisdn] = now
        link.send_mo(msisdn, self.to, self.text, self.counter, now)
        self.stats.sent += 1

    def mt_part(self, destination: bytes, total: int) -> None:
        started = self.in_flight.get(destination)
        if started is None:
            return
        seen = self.parts_seen.get(destination, 0) + 1
        if seen < total:
            self.parts_seen[destination] = seen
            return
        self.parts_seen.pop(destination, None)
        del self.in_flight[destination]
        self.stats.completed += 1
        self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.space.set()

    async def closed_loop(self, seconds: float, inflight: int) -> Stats:
        self.stats = Stats()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            while len(self.in_flight) < inflight:
                self.send_one()
            self.space.clear()
            try:
                await asyncio.wait_for(self.space.wait(), max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                break
        return self.stats

    async def open_loop(self, seconds: float, rate: float) -> Stats:
        self.stats = Stats()
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) - self.stats.sent
            for _ in range(due):
                self.send_one()
            await asyncio.sleep(0.001)
        return self.stats

    async def drain(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while self.in_flight and time.perf_counter() < deadline:
            self.space.clear()
            try:
                await asyncio.wait_for(self.space.wait(), deadline - time.perf_counter())
            except TimeoutError:
                break


class Link(asyncio.Protocol):
    """One bind: frames PDUs by hand and answers the few commands a gateway sends."""

    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.buffer = bytearray()
        self.sequence = 0
        self.transport: asyncio.Transport | None = None
        self.mo_sent_at: dict[int, float] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def send_mo(self, msisdn: bytes, to: bytes, text: bytes, reference: int, now: float) -> None:
        seq = self.next_sequence()
        self.mo_sent_at[seq] = now
        assert self.transport is not None
        self.transport.write(deliver_sm(seq, msisdn, to, text, reference))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        replies = bytearray()
        gen = self.gen
        while len(buf) >= 16:
            length, command, status, sequence = HEADER.unpack_from(buf)
            if len(buf) < length:
                break
            body = bytes(buf[16:length])
            del buf[:length]
            if command == SUBMIT_SM:
                gen.message_ids += 1
                message_id = b"%016x" % gen.message_ids
                replies += HEADER.pack(16 + len(message_id) + 1, 0x80000004, 0, sequence) + message_id + b"\x00"
                destination, total, _ = submit_destination(body)
                gen.stats.submits += 1
                if gen.args.receipts:
                    replies += receipt(self.next_sequence(), destination, b"0", message_id)
                gen.mt_part(destination, total)
            elif command == DELIVER_SM_RESP:
                sent_at = self.mo_sent_at.pop(sequence, None)
                if sent_at is not None:
                    if status == 0:
                        gen.stats.acked += 1
                        gen.stats.ack_latencies_ms.append((time.perf_counter() - sent_at) * 1000)
                    else:
                        gen.stats.nacked += 1
            elif command in (BIND_TRANSCEIVER, BIND_RECEIVER, BIND_TRANSMITTER):
                replies += HEADER.pack(16 + 6, command | 0x80000000, 0, sequence) + b"bench\x00"
                gen.bound(self)
            elif command == ENQUIRE_LINK:
                replies += HEADER.pack(16, 0x80000015, 0, sequence)
            elif command == UNBIND:
                replies += HEADER.pack(16, 0x80000006, 0, sequence)
            elif not command & 0x80000000:
                replies += HEADER.pack(16, 0x80000000, 3, sequence)
        if replies and self.transport is not None:
            self.transport.write(bytes(replies))

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.gen.links:
            self.gen.links.remove(self)


def summary(name: str, stats: Stats, seconds: float) -> dict[str, object]:
    lat = stats.latencies_ms
    return {
        "phase": name, "seconds": round(seconds, 3), "sent": stats.sent, "completed": stats.completed,
        "acked": stats.acked, "nacked": stats.nacked, "submits": stats.submits,
        "throughput": round(stats.completed / seconds, 1),
        "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(max(lat), 3) if lat else None,
        "ack_p50_ms": round(percentile(stats.ack_latencies_ms, 50), 3),
        "ack_p99_ms": round(percentile(stats.ack_latencies_ms, 99), 3),
    }


async def main(args: argparse.Namespace) -> None:
    gen = LoadGen(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Link(gen), "127.0.0.1", args.port)
    out("listening", port=server.sockets[0].getsockname()[1])
    await asyncio.wait_for(gen.all_bound.wait(), 60)
    out("bound", binds=len(gen.links))
    if args.warmup > 0:
        await gen.open_loop(args.warmup, min(args.rate, 500))
        await gen.drain(10)
    for phase in args.phases.split(","):
        out("phase_start", phase=phase)
        started = time.perf_counter()
        if phase == "closed":
            stats = await gen.closed_loop(args.seconds, args.inflight)
        else:
            stats = await gen.open_loop(args.seconds, args.rate)
        elapsed = time.perf_counter() - started
        out("phase_end", phase=phase)
        await gen.drain(10)
        out("result", **summary(phase, stats, elapsed))
    server.close()
    out("done")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--binds", type=int, default=1)
    p.add_argument("--phases", default="closed,open")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--inflight", type=int, default=256)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--to", default="5555")
    p.add_argument("--text", default="HELLO")
    p.add_argument("--receipts", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))

"""The gateway against an SMSC this project did not write: a server built on the npm `smpp`
package (tests/interop/node_smsc.js), over loopback TCP. SMS both ways, a delivery receipt, USSD,
and a clean unbind. `./dev test` installs the package (npm) into tests/interop/node_modules."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.service import Gateway
from handlers.registry import build_router
from ussdgw.config import Settings
from ussdgw.smpp.pdu import UssdOp
from ussdgw.store import AuditEvent, Store

INTEROP = Path(__file__).parent
PHONE = "79161234567"

pytestmark = pytest.mark.needs_tool(
    shutil.which("node") is None or not (INTEROP / "node_modules" / "smpp").is_dir(),
    reason="needs node and the npm `smpp` package: run ./dev test (npm install into tests/interop)",
)


class NodeSmsc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.passed: list[dict[str, Any]] = []  # events read while another kind was awaited
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.put_nowait(json.loads(line))

    async def next(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event of this kind not taken yet. Those of other kinds read meanwhile are kept
        for their own `next`: a receipt's response may come between two parts' submit_sm."""
        for at, got in enumerate(self.passed):
            if got["event"] == event:
                return self.passed.pop(at)
        async with asyncio.timeout(timeout):
            while True:
                got = await self.events.get()
                assert got["event"] != "error", got
                if got["event"] == event:
                    return got
                self.passed.append(got)

    def mo(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())


@pytest.fixture
async def node_smsc() -> AsyncIterator[NodeSmsc]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(INTEROP / "node_smsc.js"), cwd=INTEROP,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    smsc = NodeSmsc(proc)
    yield smsc
    proc.terminate()
    await proc.wait()
    smsc.reader.cancel()


@pytest.fixture
async def gateway(node_smsc: NodeSmsc, settings: Settings, store: Store) -> AsyncIterator[tuple[Gateway, Store]]:
    port = (await node_smsc.next("listening"))["port"]
    gw = Gateway(settings.with_overrides(smsc_host="127.0.0.1", smsc_port=port), store, build_router())
    await gw.start()
    assert (await node_smsc.next("bind"))["ok"]
    await gw.wait_bound(5)
    yield gw, store
    await gw.stop()


async def reply_text(smsc: NodeSmsc) -> tuple[str, list[dict[str, Any]]]:
    """The text of the next MT, all its parts put together (node decodes UCS2 itself)."""
    first = await smsc.next("submit_sm")
    parts = [first]
    if first.get("udh"):
        total = bytes.fromhex(first["udh"])[-2]
        while len(parts) < total:
            parts.append(await smsc.next("submit_sm"))
    return "".join(p["text"] for p in parts), parts


async def test_sms_both_ways_and_the_receipt_through_a_node_smpp_smsc(
    node_smsc: NodeSmsc, gateway: tuple[Gateway, Store],
) -> None:
    gw, store = gateway
    node_smsc.mo(**{"from": PHONE, "to": "3339", "text": "ПАРОЛЬ", "ref": 1})
    assert (await node_smsc.next("deliver_sm_resp"))["command_status"] == 0
    text, parts = await reply_text(node_smsc)
    assert re.search(r"Личный кабинет: \w{8,10}", text)
    assert all(p["destination_addr"] == PHONE and p["source_addr"] == "3339" for p in parts)
    assert all(p["data_coding"] == 8 and p["registered_delivery"] == 1 for p in parts)
    receipts = [await node_smsc.next("receipt_resp") for _ in parts]
    assert all(r["command_status"] == 0 for r in receipts)
    # node sends each part's receipt right behind its submit_sm_resp, so the first part's receipt
    # comes before the second part's response: the gateway keeps it (ESME_ROK, it is in Redis) and
    # records it when the whole MT is recorded as submitted, once the last response is in.
    await gw.sends_done()
    trail = await store.audit_trail(PHONE)
    assert any(e["event"] == "mt_receipt" and "state=DELIVERED" in e["detail"] for e in trail)


async def test_a_ussd_request_through_a_node_smpp_smsc_gets_its_ussd_answer(
    node_smsc: NodeSmsc, gateway: tuple[Gateway, Store],
) -> None:
    _, store = gateway
    await store.subscribers.put(PHONE, {"balance_kop": 12345}, AuditEvent("seeded", "admin"))
    node_smsc.mo(**{"from": PHONE, "to": "*100#", "text": "*100#", "ref": 2,
                    "ussd_service_op": UssdOp.PSSR_INDICATION})
    assert (await node_smsc.next("deliver_sm_resp"))["command_status"] == 0
    submit = await node_smsc.next("submit_sm")
    assert submit["service_type"] == "USSD"
    assert submit["ussd_service_op"] == UssdOp.PSSR_RESPONSE
    assert submit["destination_addr"] == PHONE
    assert "123" in submit["text"]  # the balance, in roubles


async def test_the_gateway_unbinds_from_a_node_smpp_smsc_when_it_stops(
    node_smsc: NodeSmsc, gateway: tuple[Gateway, Store],
) -> None:
    gw, _ = gateway
    await gw.stop()
    await node_smsc.next("unbind")

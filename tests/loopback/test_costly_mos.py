"""Admission control over the real channel: a burst of `ПАРОЛЬ` (each an scrypt hash) beyond what the
gateway's costly-work pool takes is answered ESME_RTHROTTLED and delivered again by the SMSC, while
cheap MOs sent in the same burst are answered at once; every phone gets exactly one reply, and each
password is issued once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.platform import extract_password
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.smpp.pdu import Status

PAROL_PHONES = [f"7916555{i:04d}" for i in range(16)]
HELP_PHONES = [f"7916556{i:04d}" for i in range(16)]


@pytest.fixture
async def busy_stack(settings: Settings) -> AsyncIterator[Stack]:
    """One hashing thread, no wait allowed behind a busy one; the SMSC tries again within 0.5 s."""
    running = Stack(settings.with_overrides(costly_workers=1, costly_max_wait_s=0.0, sim_retry_max_s=0.5))
    await running.start()
    assert running.gateway is not None
    await running.gateway.wait_bound(5)
    yield running
    await running.stop()


def statuses(stack: Stack, msisdn: str) -> list[int]:
    """The deliver_sm_resp statuses the SMSC got for this phone's MOs (not its receipts), in order."""
    assert stack.smsc is not None
    return [entry.status for entry in stack.smsc.phones.pdu_log.get(msisdn, ())
            if entry.direction == "smsc->gateway" and not getattr(entry.pdu, "is_delivery_receipt", False)]


async def test_a_burst_of_costly_mos_is_throttled_not_queued_and_cheap_ones_keep_flowing(busy_stack: Stack) -> None:
    stack = busy_stack
    assert stack.smsc is not None and stack.store is not None
    phones = stack.smsc.phones
    after = phones.last_seq
    for parol, cheap in zip(PAROL_PHONES, HELP_PHONES, strict=True):
        stack.smsc.submit_mo(parol, "3339", "ПАРОЛЬ")
        stack.smsc.submit_mo(cheap, "3339", "HELP")

    async def replies(msisdn: str) -> list[str]:
        got = await phones.wait_inbox(msisdn, after, 30)
        return [m.text for m in got if m.sender == "3339"]

    async with asyncio.timeout(40):
        cheap = await asyncio.gather(*(replies(m) for m in HELP_PHONES))
        costly = await asyncio.gather(*(replies(m) for m in PAROL_PHONES))
    assert all(len(texts) == 1 and "Не удалось распознать" in texts[0] for texts in cheap)
    assert all(len(texts) == 1 for texts in costly)
    assert len({extract_password(texts[0]) for texts in costly}) == len(PAROL_PHONES)
    # Some ПАРОЛЬ waited at the SMSC (ESME_RTHROTTLED, then ESME_ROK once a hash was free) ...
    throttled = [m for m in PAROL_PHONES if Status.RTHROTTLED in statuses(stack, m)]
    assert throttled, "a burst of 16 hashes on one thread with no wait allowed was never throttled"
    assert all(statuses(stack, m)[-1] == Status.ROK for m in PAROL_PHONES)
    # ... the cheap MOs never did, and each password was issued once (a throttled MO changed nothing)
    assert all(statuses(stack, m) == [Status.ROK] for m in HELP_PHONES)
    for msisdn in PAROL_PHONES:
        events = [e["event"] for e in await stack.store.audit_trail(msisdn)]
        assert events.count("password_issued") == 1, msisdn
    # no more replies come later (a throttled MO's first try left nothing behind)
    await asyncio.sleep(1.5)
    for msisdn in PAROL_PHONES + HELP_PHONES:
        assert len([m for m in phones.get(msisdn).inbox if m.seq > after and m.sender == "3339"]) == 1, msisdn

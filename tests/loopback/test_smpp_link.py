"""The asyncio link (`ussdgw.link`) on its own: two `SmppLink`s over a socket pair, no gateway and no
simulator. Responses settle their requests, timeouts come from one deadline scan per link, writes
are coalesced, a closed link fails what is outstanding; and the backoff every retry uses."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from ussdgw.link.backoff import Backoff
from ussdgw.link.link import LinkDown, ResponseTimeout, SmppLink
from ussdgw.smpp.pdu import Bind, BindResp, Status, SubmitSm, SubmitSmResp, Unbind
from ussdgw.smpp.session import Event, RequestReceived, Role, SessionState, SmppSession, Unbound

MT = SubmitSm(source_addr="3339", destination_addr="79161234567", short_message=b"hello")


@dataclass
class Ends:
    esme: SmppLink
    smsc: SmppLink
    at_smsc: list[Event] = field(default_factory=list)
    at_esme: list[Event] = field(default_factory=list)
    answer_submits: bool = True
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@pytest.fixture
async def ends() -> AsyncIterator[Ends]:
    """A bound ESME link and SMSC link; the SMSC accepts the bind and (unless told not to) answers submits."""
    a, b = socket.socketpair()
    esme_io, smsc_io = await asyncio.open_connection(sock=a), await asyncio.open_connection(sock=b)
    holder: list[Ends] = []

    def smsc_event(event: Event) -> None:
        e = holder[0]
        e.at_smsc.append(event)
        if isinstance(event, RequestReceived) and isinstance(event.pdu, Bind):
            e.smsc.session.respond(event.pdu, BindResp(system_id="smsc"))
        elif isinstance(event, RequestReceived) and isinstance(event.pdu, SubmitSm) and e.answer_submits:
            e.smsc.session.respond(event.pdu, SubmitSmResp(message_id=str(event.pdu.sequence)))

    esme = SmppLink(*esme_io, SmppSession(Role.ESME), lambda event: holder[0].at_esme.append(event),
                    response_timeout_s=5.0, window=4)
    smsc = SmppLink(*smsc_io, SmppSession(Role.SMSC), smsc_event)
    e = Ends(esme, smsc)
    holder.append(e)
    e.tasks = [asyncio.create_task(esme.run()), asyncio.create_task(smsc.run())]
    resp = await esme.request(Bind(system_id="esme", password="pw"))
    assert resp.status == Status.ROK and esme.session.is_bound
    yield e
    await esme.close()
    await smsc.close()
    await asyncio.wait_for(asyncio.gather(*e.tasks), 5)


async def test_responses_settle_their_requests_and_nothing_stays_outstanding(ends: Ends) -> None:
    responses = await asyncio.gather(*(ends.esme.call(MT) for _ in range(10)))
    assert sorted(int(r.message_id) for r in responses if isinstance(r, SubmitSmResp)) == list(range(2, 12))
    assert not ends.esme.session.outstanding


async def test_timeouts_come_from_one_deadline_scan_each_at_its_own_time(ends: Ends) -> None:
    ends.answer_submits = False
    loop = asyncio.get_running_loop()
    started = loop.time()
    failed: list[tuple[float, float]] = []

    async def send(timeout: float) -> None:
        with pytest.raises(ResponseTimeout):
            await ends.esme.request(MT, timeout)
        failed.append((timeout, loop.time() - started))

    await asyncio.gather(send(0.3), send(0.1), send(0.2))
    assert [timeout for timeout, _ in failed] == [0.1, 0.2, 0.3]
    assert all(timeout - 0.001 <= elapsed < timeout + 1.0 for timeout, elapsed in failed)
    assert not ends.esme.session.outstanding and ends.esme._timer is None  # nothing left to wake for


async def test_requests_queued_in_one_loop_turn_leave_in_one_write(ends: Ends, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    write = ends.esme.writer.write
    monkeypatch.setattr(ends.esme.writer, "write", lambda data: (writes.append(data), write(data)))
    futures = [ends.esme.request(MT) for _ in range(20)]
    await asyncio.gather(*futures)
    assert len(writes) == 1


async def test_a_closed_link_fails_what_is_outstanding_and_refuses_new_requests(ends: Ends) -> None:
    ends.answer_submits = False
    waiting = ends.esme.request(MT)
    await asyncio.sleep(0.05)
    await ends.smsc.close()  # the peer goes away
    with pytest.raises(LinkDown):
        await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(ends.esme.closed.wait(), 5)
    assert ends.esme.session.state is SessionState.CLOSED and not ends.esme.session.outstanding
    with pytest.raises(LinkDown):
        ends.esme.request(MT)


async def test_the_window_holds_requests_beyond_its_size(ends: Ends) -> None:
    ends.answer_submits = False
    calls = [asyncio.create_task(ends.esme.call(MT, 5)) for _ in range(6)]
    await asyncio.sleep(0.1)
    assert len(ends.esme.session.outstanding) == 4  # the window is 4
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


async def test_unbind_is_answered_both_ends_close(ends: Ends) -> None:
    await ends.esme.unbind(5)
    assert Unbound(by_peer=True) in ends.at_smsc and Unbound(by_peer=False) in ends.at_esme
    await asyncio.wait_for(ends.smsc.closed.wait(), 5)
    assert ends.esme.session.state is ends.smsc.session.state is SessionState.CLOSED


async def test_keepalive_probes_and_gives_up_on_a_silent_peer(ends: Ends) -> None:
    probing = asyncio.create_task(ends.esme.keepalive(0.05, 0.1))
    await asyncio.sleep(0.2)
    assert not probing.done()  # answered: still probing
    ends.tasks[1].cancel()  # the SMSC stops reading: its answers stop
    with pytest.raises(LinkDown, match="enquire_link unanswered"):
        await asyncio.wait_for(probing, 5)
    ends.tasks[1] = asyncio.create_task(ends.smsc.close())


async def test_keepalive_ends_quietly_when_the_link_closes(ends: Ends) -> None:
    probing = asyncio.create_task(ends.esme.keepalive(10.0))
    await asyncio.sleep(0)
    await ends.esme.unbind(5)
    await asyncio.wait_for(probing, 1)


def test_backoff_doubles_up_to_its_ceiling_with_jitter_around_each_step() -> None:
    low = Backoff(0.1, 1.0, rng=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(6)] == [0.08, 0.16, 0.32, 0.64, 0.8, 0.8]
    high = Backoff(0.1, 1.0, rng=lambda: 1.0)
    assert [round(high.next(), 3) for _ in range(2)] == [0.12, 0.24]
    exact = Backoff(0.2, 10.0, jitter=0.0)
    assert [exact.next() for _ in range(3)] == [0.2, 0.4, 0.8]
    exact.at_least(5.0)
    assert exact.next() == 5.0 and exact.current == 10.0
    exact.reset()
    assert exact.next() == 0.2
    with pytest.raises(ValueError):
        Backoff(1, 2, jitter=1.5)


async def test_an_unbind_sent_makes_new_requests_fail_fast(ends: Ends) -> None:
    ends.esme.session.send(Unbind())
    with pytest.raises(LinkDown, match="unbinding"):
        ends.esme.request(MT)

"""The benchmark's reference: a bare echo ESME on the platform's own SMPP code, nothing else.

It binds to the load generator as the gateway does (transceiver, `ussdgw.link.SmppLink` over an
`ussdgw.smpp.SmppSession`: the same framing, codec and session table), answers every deliver_sm
with ESME_ROK and, for an MO, submits one submit_sm back to the sender with the MO's own text.
No Redis, no routing, no handler, no log line, no receipt bookkeeping (receipts are answered and
dropped). What the gateway does on top of this is what its ratio to the echo measures.

    python bench/echo.py --smsc 127.0.0.1:2775 [--binds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ussdgw.link.link import SmppLink
from ussdgw.smpp.pdu import Bind, BindMode, DeliverSm, DeliverSmResp, GenericNack, Status, SubmitSm
from ussdgw.smpp.session import Event, RequestReceived, Role, SmppSession


async def serve_bind(host: str, port: int, name: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    link: SmppLink

    def on_event(event: Event) -> None:
        if not isinstance(event, RequestReceived):
            return
        pdu = event.pdu
        if not isinstance(pdu, DeliverSm):
            link.respond(pdu, GenericNack(status=Status.RINVCMDID))
            return
        link.respond(pdu, DeliverSmResp())
        if pdu.is_delivery_receipt:
            return
        # Fire and forget: the submit_sm_resp settles nothing here (no deadline, no future).
        link.session.send(SubmitSm(source_addr=pdu.destination_addr, dest_addr_ton=1, dest_addr_npi=1,
                                   destination_addr=pdu.source_addr, registered_delivery=1,
                                   data_coding=pdu.data_coding, short_message=pdu.short_message))
        link.flush_soon()

    link = SmppLink(reader, writer, SmppSession(Role.ESME), on_event, window=1 << 20)
    runner = asyncio.create_task(link.run(), name=f"{name}-reader")
    resp = await link.request(Bind(mode=BindMode.TRANSCEIVER, system_id="echo", password="echo"))
    if resp.status != Status.ROK:
        raise SystemExit(f"bind refused: 0x{resp.status:02x}")
    print(f"{name} bound", flush=True)
    await runner


async def main(args: argparse.Namespace) -> None:
    host, _, port = args.smsc.rpartition(":")
    await asyncio.gather(*(serve_bind(host, int(port), f"bind-{i + 1}") for i in range(args.binds)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smsc", required=True, help="HOST:PORT of the SMSC (the load generator)")
    parser.add_argument("--binds", type=int, default=1)
    with contextlib.suppress(KeyboardInterrupt, ConnectionError):
        asyncio.run(main(parser.parse_args()))

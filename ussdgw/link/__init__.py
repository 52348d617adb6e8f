"""The asyncio side of SMPP: what moves bytes between a socket and an I/O-free `SmppSession`.

    link.py     SmppLink: one connection (reads, coalesced writes, request/response futures with
                response timeouts by a per-link deadline scan, keepalive, unbind, closed event)
    flow.py     Window (outstanding requests) and TokenBucket (a rate), for both ends
    backoff.py  Backoff: exponential with jitter, wherever something is tried again

`ussdgw.smpp` (PDUs, codec, session, USSD, receipts) never imports from here; both the gateway's
ESME (`gateway.esme`) and the simulator's SMSC (`simulator.smsc`) build on `SmppLink`.
"""

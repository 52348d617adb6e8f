"""From a deliver_sm to what a handler reads: text decoded, parts found, receipts recognised
(`parse_receipt`, which is `ussdgw.smpp.receipt.read_receipt`: the receipt format lives there).

Pure functions: no Redis, no sockets. Long-message parts are stored in Redis by the caller
(several gateway processes may each get some of the parts).
"""

from __future__ import annotations

import hashlib
import math

from ussdgw.inputs import parse_address
from ussdgw.records import record
from ussdgw.smpp.concat import ConcatError, parse_udh
from ussdgw.smpp.pdu import DataSm, DeliverSm, EsmClass, Status
from ussdgw.smpp.receipt import Receipt
from ussdgw.smpp.receipt import read_receipt as parse_receipt

__all__ = ["Part", "Receipt", "find_part", "mo_identity",
           "parse_receipt", "unanswerable"]



MAX_ADDRESS = 20  # octets in an SMPP address (a C-octet string of 21 with its NUL)


def unanswerable(pdu: DeliverSm | DataSm) -> int | None:
    """The permanent error status for an MO whose reply could never be addressed, or None.

    The reply goes back to `source_addr` as an international number, from `destination_addr`:
    a source that is not a phone's number (`ussdgw.inputs.parse_address`: 5-15 ASCII digits; the
    SMPP parser lets 21 characters and more through, which our encoder would refuse for ever)
    gets ESME_RINVSRCADR, a destination that is empty or longer than an SMPP address (20 octets)
    ESME_RINVDSTADR. Answering ESME_ROK and queueing
    a reply that can never leave would strand it in the outbox; a permanent error tells the SMSC
    to stop redelivering.
    """
    if parse_address(pdu.source_addr) is None:
        return Status.RINVSRCADR
    if not pdu.destination_addr or len(pdu.destination_addr) > MAX_ADDRESS:
        return Status.RINVDSTADR
    return None


def is_notification(pdu: DeliverSm | DataSm) -> bool:
    """A deliver_sm of another message type than a plain message or a delivery receipt (an
    intermediate notification, an SME acknowledgement): it says something about an MT, it asks
    for nothing, and it is never routed as an MO."""
    esm_type = pdu.esm_class & EsmClass.MESSAGE_TYPE_MASK
    return esm_type != 0 and not esm_type & EsmClass.DELIVERY_RECEIPT


@record
class Part:
    """One part of a long MO: reference, total and number, wherever the sender put them."""

    reference: int
    total: int
    seqnum: int
    payload: bytes


def find_part(pdu: DeliverSm | DataSm) -> tuple[Part | None, bytes]:
    """The concatenation info (UDH or SAR TLVs) and the user data without its header."""
    payload = pdu.message_payload if pdu.message_payload is not None else getattr(pdu, "short_message", b"")
    if pdu.sar_msg_ref_num is not None and pdu.sar_total_segments and pdu.sar_segment_seqnum:
        part = Part(pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum, payload)
        return (part if part.total > 1 else None), payload
    if pdu.esm_class & EsmClass.UDHI:
        try:
            info, data = parse_udh(payload)
        except ConcatError:
            return None, payload
        if info is not None and info.total > 1:
            return Part(info.reference, info.total, info.seqnum, data), data
        return None, data
    return None, payload


def mo_identity(pdu: DeliverSm | DataSm, payload: bytes, part: Part | None = None, *,
                window_s: float = 300.0) -> tuple[str, int]:
    """An id that a redelivery of the same MO reproduces, and how long to remember it: `window_s`
    (`mo_dedup_window_s`, as long as the SMSC redelivers), with or without a reference.

    A `user_message_reference` tells repeated sends of the same text apart, but only while it is
    unique: a handset's 8-bit reference wraps every 256 messages and a restarted SMSC may count
    from 1 again, so it is never trusted longer than the window. Without one, only the content
    identifies the MO: the same text again within the window is taken for a redelivery.
    """
    # The fields, each ended by a NUL, then the payload: hashed in one call (a redelivery after an
    # upgrade must get the same id, so these bytes never change).
    reference, total = (part.reference, part.total) if part else ("", "")
    head = (f"{pdu.source_addr}\0{pdu.destination_addr}\0{pdu.data_coding}\0{pdu.user_message_reference}\0"
            f"{pdu.its_session_info}\0{reference}\0{total}\0")
    return hashlib.blake2b(head.encode() + payload, digest_size=12).hexdigest(), max(1, math.ceil(window_s))

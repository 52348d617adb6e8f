"""What the web phone's PDU log shows of one SMPP PDU: the headline a tester scans (command,
sequence number, addresses, USSD operation and end-of-session bit, part n of m, the receipt's
state and error, the response's ESME_* name) and every field, to expand.

Pure functions over the core's PDU dataclasses; nothing here sends or parses bytes off a socket.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ussdgw.metrics import status_name
from ussdgw.smpp.concat import ConcatError, parse_udh
from ussdgw.smpp.pdu import DataSm, DeliverSm, EsmClass, ShortMessagePdu, UssdOp
from ussdgw.smpp.receipt import read_receipt
from ussdgw.smpp.text import TextDecodeError, decode_text
from ussdgw.smpp.ussd import unpack_session_info

MAX_FIELD_CHARS = 400  # a field's shown value (hex of a long short_message) is cut past this


def status_label(status: int) -> str:
    """`ESME_RINVDSTADR` for a status SMPP 3.4 names; its hex value otherwise."""
    name = status_name(status)
    return name if name.startswith("ESME_") else f"0x{status:08X}"


def _name(kind: type[UssdOp], value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return ""


def _shown(value: Any) -> Any:
    if isinstance(value, bytes):
        shown = value.hex()
        return shown if len(shown) <= MAX_FIELD_CHARS else shown[:MAX_FIELD_CHARS] + "…"
    if isinstance(value, tuple):
        return [_shown(v) for v in value]
    return value


def _text(pdu: ShortMessagePdu | DataSm, payload: bytes) -> str | None:
    try:
        return decode_text(payload, pdu.data_coding)
    except TextDecodeError:
        return None


def summarize(pdu: ShortMessagePdu | DataSm) -> dict[str, Any]:
    """The PDU log's entry for a submit_sm, deliver_sm or data_sm (without the response)."""
    summary: dict[str, Any] = {"command": type(pdu).__name__.replace("Sm", "_sm").lower(),
                               "sequence": pdu.sequence, "data_coding": pdu.data_coding}
    fields = {f.name: _shown(getattr(pdu, f.name)) for f in dataclasses.fields(pdu)
              if getattr(pdu, f.name) not in (None, "", b"", ())}
    payload = pdu.payload if isinstance(pdu, ShortMessagePdu) else pdu.message_payload or b""
    summary["from"], summary["to"] = pdu.source_addr, pdu.destination_addr
    summary["esm_class"] = pdu.esm_class
    if pdu.ussd_service_op is not None:
        summary["ussd_service_op"] = pdu.ussd_service_op
        summary["ussd_op_name"] = _name(UssdOp, pdu.ussd_service_op)
    if pdu.its_session_info is not None:
        info = unpack_session_info(pdu.its_session_info)
        summary["session"] = {"number": info.session, "sequence": info.sequence, "end": info.end}
    if pdu.sar_total_segments and pdu.sar_segment_seqnum:
        summary["part"] = {"seq": pdu.sar_segment_seqnum, "total": pdu.sar_total_segments,
                           "ref": pdu.sar_msg_ref_num, "by": "SAR"}
    elif pdu.esm_class & EsmClass.UDHI:
        try:
            info_udh, payload = parse_udh(payload)
        except ConcatError:
            info_udh = None
        if info_udh is not None:
            summary["part"] = {"seq": info_udh.seqnum, "total": info_udh.total, "ref": info_udh.reference,
                               "by": "UDH"}
    text = _text(pdu, payload)
    if text is not None:
        fields["text"] = text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + "…"
    if isinstance(pdu, DeliverSm | DataSm) and pdu.esm_class & (EsmClass.DELIVERY_RECEIPT
                                                                | EsmClass.INTERMEDIATE_NOTIFICATION):
        receipt = read_receipt(pdu, text or "")
        if receipt is not None:
            summary["receipt"] = {"message_id": receipt.message_id, "state": receipt.state.name,
                                  "error": receipt.error,
                                  "intermediate": bool(pdu.esm_class & EsmClass.INTERMEDIATE_NOTIFICATION)}
    summary["fields"] = fields
    return summary


def with_response(summary: dict[str, Any], status: int, **extra: Any) -> dict[str, Any]:
    """The entry once the response came: its status as a number and as SMPP names it."""
    return {**summary, "status": status, "status_name": status_label(status), **extra}

"""Delivery receipts, both ways: the one place that knows the de-facto receipt text

    id:<message_id> sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD err:000 text:...

and the TLVs that say the same (`receipted_message_id`, `message_state`, `network_error_code`).
The simulator's SMSC writes receipts with `receipt_pdu`; the gateway reads them with
`read_receipt`, which lets the TLVs win over the text (PROTOCOL.md, "Delivery receipts").

Reading is lenient, as carriers differ: fields in any order, keys in any case, `submit_date` with
an underscore, any stat word (one it does not know reads as UNKNOWN). A text without both `id:`
and `stat:` is not a receipt text. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ussdgw.records import record
from ussdgw.smpp.pdu import DataSm, DeliverSm, EsmClass, MessageState

STAT_WORDS: dict[MessageState, str] = {
    MessageState.ENROUTE: "ENROUTE", MessageState.DELIVERED: "DELIVRD", MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED", MessageState.UNDELIVERABLE: "UNDELIV", MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN", MessageState.REJECTED: "REJECTD",
}
_STATES = {word: state for state, word in STAT_WORDS.items()}
_STATE_OF = {state.value: state for state in MessageState}  # the message_state TLV's value to its state

# What `format_receipt` writes, with or without its `text:` (many SMSCs leave it out), read in one
# match (the common case, and the cheap one: the field by field reading costs several times more); anything
# else goes field by field: `key:value` fields before `text:`, the text running to the end.
_CANONICAL = re.compile(
    r"id:(\S+) sub:(\S*) dlvrd:(\S*) submit date:(\S*) done date:(\S*) stat:(\w+) err:(\w*)(?: text:(.*))?\Z", re.S)
_FIELD = re.compile(r"\b(id|sub|dlvrd|submit[ _]date|done[ _]date|stat|err):(\S*)", re.I)
_TEXT = re.compile(r"\btext:", re.I)
_WORD = re.compile(r"\w*")
_KEYS = {"id": "message_id", "sub": "submitted", "dlvrd": "delivered", "submit date": "submit_date",
         "done date": "done_date", "stat": "stat", "err": "error"}
NETWORK_ERROR_GSM = 3  # network_error_code: its first octet says which network type the code is of


@record  # frozen to mypy, built at a plain dataclass's cost: two per MO
class Receipt:
    """What a delivery receipt says. Fields other than the id and the state are kept as written
    (`error` "000", dates `YYMMDDhhmm`), empty when the receipt did not carry them."""

    message_id: str
    state: MessageState
    error: str = ""
    submitted: str = ""  # `sub:`, how many were submitted
    delivered: str = ""  # `dlvrd:`, how many were delivered
    submit_date: str = ""
    done_date: str = ""
    text: str = ""  # `text:`, the start of the message, as some SMSCs quote it


def receipt_date(ts: float) -> str:
    """A receipt's date field (YYMMDDhhmm, UTC) for a POSIX time."""
    return datetime.fromtimestamp(ts, UTC).strftime("%y%m%d%H%M")


def format_receipt(receipt: Receipt) -> str:
    """The receipt text; `parse_receipt_text` reads back the same `Receipt`."""
    if not receipt.message_id or any(c.isspace() for c in receipt.message_id):
        raise ValueError(f"receipt message id {receipt.message_id!r} is empty or holds a space")
    return (f"id:{receipt.message_id} sub:{receipt.submitted} dlvrd:{receipt.delivered} "
            f"submit date:{receipt.submit_date} done date:{receipt.done_date} stat:{STAT_WORDS[receipt.state]} "
            f"err:{receipt.error} text:{receipt.text}")


def parse_receipt_text(text: str) -> Receipt | None:
    """The fields of a receipt text, or None when it has no `id:` or no `stat:`."""
    match = _CANONICAL.match(text)
    if match is not None:
        message_id, sub, dlvrd, submit_date, done_date, stat, error, quoted = match.groups()
        return Receipt(message_id, _STATES.get(stat.upper(), MessageState.UNKNOWN), error, sub, dlvrd,
                       submit_date, done_date, quoted or "")
    cut = _TEXT.search(text)
    head, quoted = (text[: cut.start()], text[cut.end() :]) if cut else (text, "")
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(head):
        fields.setdefault(_KEYS[key.lower().replace("_", " ")], value)
    message_id, stat = fields.pop("message_id", ""), _word(fields.pop("stat", ""))
    if not message_id or not stat:
        return None
    if "error" in fields:
        fields["error"] = _word(fields["error"])
    return Receipt(message_id, _STATES.get(stat.upper(), MessageState.UNKNOWN), text=quoted, **fields)


def _word(value: str) -> str:
    """The leading word of a value (`DELIVRD,` -> `DELIVRD`): stat and err are words."""
    match = _WORD.match(value)
    return match.group() if match else ""


def read_receipt(pdu: DeliverSm | DataSm, text: str) -> Receipt | None:
    """A receipt from a deliver_sm / data_sm: its TLVs first, then its text; None if neither names
    the message."""
    parsed = parse_receipt_text(text)
    message_id = pdu.receipted_message_id or (parsed.message_id if parsed else None)
    if not message_id:
        return None
    if pdu.message_state is not None:
        state = _STATE_OF.get(pdu.message_state, MessageState.UNKNOWN)
    else:
        state = parsed.state if parsed else MessageState.UNKNOWN
    if parsed is None:
        return Receipt(message_id, state)
    if message_id == parsed.message_id and state is parsed.state:
        return parsed  # text and TLVs agree, as they do from any sane SMSC
    return Receipt(message_id, state, parsed.error, parsed.submitted, parsed.delivered, parsed.submit_date,
                   parsed.done_date, parsed.text)


def receipt_pdu(message_id: str, state: MessageState, error: int, *, source: str, destination: str,
                submitted_at: float, done_at: float) -> DeliverSm:
    """The deliver_sm an SMSC sends for an MT's fate: text and TLVs saying the same thing."""
    text = format_receipt(Receipt(
        message_id, state, f"{error:03d}", "001", "001" if state is MessageState.DELIVERED else "000",
        receipt_date(submitted_at), receipt_date(done_at),
    ))
    return DeliverSm(
        source_addr=source, destination_addr=destination, esm_class=EsmClass.DELIVERY_RECEIPT,
        short_message=text.encode("ascii"), receipted_message_id=message_id, message_state=state,
        network_error_code=bytes([NETWORK_ERROR_GSM]) + error.to_bytes(2, "big"),
    )

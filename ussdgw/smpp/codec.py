"""The one adapter between smpplib's PDU codec and the platform's PDU dataclasses.

smpplib encodes and decodes the mandatory body of every PDU (`encode_reference` /
`decode_reference`). Optional parameters (TLVs) are framed here instead, because smpplib's
`DeliverSM` does not know `ussd_service_op` (parsing a USSD deliver_sm raises KeyError) and it
drops or chokes on tags it has not heard of. Unknown tags are kept as raw bytes so that nothing
a peer sent is lost.

The PDUs of the hot path (submit_sm, deliver_sm, their responses, enquire_link, unbind,
generic_nack) have a fast path written here with `struct` and `bytes.index`: smpplib builds a
Python object per field and costs ~40 us per PDU, a gateway doing thousands of MO->MT round
trips a second cannot pay that four times per message. smpplib stays the reference: the
property tests check that both paths give the same bytes and the same PDUs
(tests/unit/test_codec_properties.py).

Errors: `decode` raises only `PduDecodeError`, which carries the command_status to answer with
and, when the header could be read, the sequence number to answer to.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

from smpplib import command as smpp_command
from smpplib import ptypes

from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    BindResp,
    CommandId,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageTlvs,
    Pdu,
    QuerySm,
    QuerySmResp,
    Status,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
    command_of,
    with_sequence,
)

HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")
HEADER_SIZE = 16
MAX_PDU_SIZE = 64 * 1024
SC_INTERFACE_VERSION = 0x0210


class PduDecodeError(ValueError):
    """A PDU that cannot be decoded; `status` says what to answer, `sequence` to whom."""

    def __init__(self, message: str, status: Status, command_id: int = 0, sequence: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.command_id = command_id
        self.sequence = sequence


class PduEncodeError(ValueError):
    """A PDU the platform itself built wrongly (a field too long, a value out of range)."""


class _SequenceFree:
    """smpplib PDUs pull sequence numbers from a client object; the session numbers PDUs itself."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


_SEQUENCE_FREE = _SequenceFree()

# Which smpplib class carries the mandatory body of each of our PDUs.
_SMPPLIB: dict[CommandId, type[Any]] = {
    CommandId.GENERIC_NACK: smpp_command.GenericNAck,
    CommandId.BIND_RECEIVER: smpp_command.BindReceiver,
    CommandId.BIND_TRANSMITTER: smpp_command.BindTransmitter,
    CommandId.BIND_TRANSCEIVER: smpp_command.BindTransceiver,
    CommandId.BIND_RECEIVER_RESP: smpp_command.BindReceiverResp,
    CommandId.BIND_TRANSMITTER_RESP: smpp_command.BindTransmitterResp,
    CommandId.BIND_TRANSCEIVER_RESP: smpp_command.BindTransceiverResp,
    CommandId.SUBMIT_SM: smpp_command.SubmitSM,
    CommandId.SUBMIT_SM_RESP: smpp_command.SubmitSMResp,
    CommandId.DELIVER_SM: smpp_command.DeliverSM,
    CommandId.DELIVER_SM_RESP: smpp_command.DeliverSMResp,
    CommandId.DATA_SM: smpp_command.DataSM,
    CommandId.DATA_SM_RESP: smpp_command.DataSMResp,
    CommandId.QUERY_SM: smpp_command.QuerySM,
    CommandId.QUERY_SM_RESP: smpp_command.QuerySMResp,
    CommandId.UNBIND: smpp_command.Unbind,
    CommandId.UNBIND_RESP: smpp_command.UnbindResp,
    CommandId.ENQUIRE_LINK: smpp_command.EnquireLink,
    CommandId.ENQUIRE_LINK_RESP: smpp_command.EnquireLinkResp,
}

_OURS: dict[CommandId, type[Pdu]] = {
    CommandId.GENERIC_NACK: GenericNack,
    CommandId.BIND_RECEIVER: Bind,
    CommandId.BIND_TRANSMITTER: Bind,
    CommandId.BIND_TRANSCEIVER: Bind,
    CommandId.BIND_RECEIVER_RESP: BindResp,
    CommandId.BIND_TRANSMITTER_RESP: BindResp,
    CommandId.BIND_TRANSCEIVER_RESP: BindResp,
    CommandId.SUBMIT_SM: SubmitSm,
    CommandId.SUBMIT_SM_RESP: SubmitSmResp,
    CommandId.DELIVER_SM: DeliverSm,
    CommandId.DELIVER_SM_RESP: DeliverSmResp,
    CommandId.DATA_SM: DataSm,
    CommandId.DATA_SM_RESP: DataSmResp,
    CommandId.QUERY_SM: QuerySm,
    CommandId.QUERY_SM_RESP: QuerySmResp,
    CommandId.UNBIND: Unbind,
    CommandId.UNBIND_RESP: UnbindResp,
    CommandId.ENQUIRE_LINK: EnquireLink,
    CommandId.ENQUIRE_LINK_RESP: EnquireLinkResp,
}


def _mandatory_fields(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f for f in cls.params_order if not _smpplib_optional(cls, f))


def _smpplib_optional(cls: type[Any], name: str) -> bool:
    from smpplib import consts

    if name in getattr(cls, "mandatory_fields", ()):
        return False
    return name in consts.OPTIONAL_PARAMS


_MANDATORY: dict[CommandId, tuple[str, ...]] = {c: _mandatory_fields(k) for c, k in _SMPPLIB.items()}
# smpplib's QuerySMResp marks message_state mandatory through a string, not a tuple; say it plainly.
_MANDATORY[CommandId.QUERY_SM_RESP] = ("message_id", "final_date", "message_state", "error_code")
_STRING_FIELDS = {
    c: frozenset(f for f in names if _SMPPLIB[c].params[f].type is str) for c, names in _MANDATORY.items()
}

# TLVs by tag: (field name, kind) where kind is an int size, "str" (C-octet string) or "bytes".
_TLV_SPEC: dict[int, tuple[str, int | str]] = {
    Tag.USER_MESSAGE_REFERENCE: ("user_message_reference", 2),
    Tag.SAR_MSG_REF_NUM: ("sar_msg_ref_num", 2),
    Tag.SAR_TOTAL_SEGMENTS: ("sar_total_segments", 1),
    Tag.SAR_SEGMENT_SEQNUM: ("sar_segment_seqnum", 1),
    Tag.RECEIPTED_MESSAGE_ID: ("receipted_message_id", "str"),
    Tag.MESSAGE_STATE: ("message_state", 1),
    Tag.NETWORK_ERROR_CODE: ("network_error_code", "bytes"),
    Tag.MESSAGE_PAYLOAD: ("message_payload", "bytes"),
    Tag.USSD_SERVICE_OP: ("ussd_service_op", 1),
    Tag.ITS_SESSION_INFO: ("its_session_info", 2),
}
_TLV_BY_NAME = {name: (tag, kind) for tag, (name, kind) in _TLV_SPEC.items()}
_TLV_ORDER = tuple(_TLV_BY_NAME)


def encode(pdu: Pdu, sequence: int | None = None) -> bytes:
    """Bytes on the wire for `pdu`, header included; numbered `sequence` when given (a response
    takes its request's number: a plain response is written so without a copy of it)."""
    if sequence is not None and sequence != pdu.sequence:
        numbered = _NUMBERED_ENCODERS.get(type(pdu))
        if numbered is not None:
            return numbered(pdu, sequence)
        pdu = with_sequence(pdu, sequence)
    fast = _FAST_ENCODERS.get(type(pdu))
    if fast is not None:
        return fast(pdu)
    return encode_reference(pdu)


def encode_reference(pdu: Pdu) -> bytes:
    """`encode` through smpplib for every PDU type (the reference the fast path is tested against)."""
    command = command_of(pdu)
    body = _encode_mandatory(command, pdu)
    if isinstance(pdu, MessageTlvs):
        body += _encode_tlvs(pdu)
    elif isinstance(pdu, BindResp) and pdu.sc_interface_version is not None:
        body += struct.pack(">HHB", SC_INTERFACE_VERSION, 1, pdu.sc_interface_version)
    return HEADER.pack(HEADER_SIZE + len(body), command, pdu.status, pdu.sequence) + body


def _encode_mandatory(command: CommandId, pdu: Pdu) -> bytes:
    names = _MANDATORY[command]
    if not names:
        return b""
    if pdu.status and isinstance(pdu, SubmitSmResp | DeliverSmResp | DataSmResp | BindResp):
        # SMPP 3.4 §4: an error response carries no body.
        return b""
    obj = _SMPPLIB[command](command.name.lower(), client=_SEQUENCE_FREE)
    strings = _STRING_FIELDS[command]
    for name in names:
        if name == "sm_length":
            continue
        value = getattr(pdu, name)
        if name in strings:
            spec = obj.params[name]
            limit = getattr(spec, "max", 256) - 1
            if len(value) > limit:
                raise PduEncodeError(f"{command.name.lower()}.{name} longer than {limit} octets")
        setattr(obj, name, value)
    try:
        return bytes(obj.generate_params())
    except (struct.error, TypeError, ValueError) as exc:
        raise PduEncodeError(f"cannot encode {command.name.lower()}: {exc}") from exc


_TLV_VALUES = attrgetter(*_TLV_ORDER)
_TLV_KINDS = tuple(_TLV_BY_NAME[name] for name in _TLV_ORDER)


def _encode_tlvs(pdu: MessageTlvs) -> bytes:
    out = bytearray()
    for (tag, kind), value in zip(_TLV_KINDS, _TLV_VALUES(pdu), strict=True):
        if value is None:
            continue
        if kind == "str":
            raw = value.encode("ascii") + b"\x00"
        elif kind == "bytes":
            raw = bytes(value)
        else:
            assert isinstance(kind, int)
            raw = int(value).to_bytes(kind, "big")
        out += _TLV_HEADER.pack(tag, len(raw)) + raw
    for tag, raw in pdu.other_tlvs:
        out += _TLV_HEADER.pack(tag, len(raw)) + raw
    return bytes(out)


def read_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number) of a framed PDU."""
    return HEADER.unpack_from(data)


def decode(data: bytes) -> Pdu:
    """Decode one whole PDU (header included)."""
    if len(data) < HEADER_SIZE:
        raise PduDecodeError("PDU shorter than its header", Status.RINVCMDLEN)
    length, command_id, status, sequence = HEADER.unpack_from(data)
    fast = _FAST_DECODERS.get(command_id)
    if fast is None:
        return decode_reference(data)
    if length != len(data):
        raise PduDecodeError("command_length does not match the PDU", Status.RINVCMDLEN, command_id, sequence)
    try:
        return fast(data, status, sequence)
    except PduDecodeError as exc:
        exc.command_id, exc.sequence = command_id, sequence
        raise


def decode_reference(data: bytes) -> Pdu:
    """`decode` through smpplib for every PDU type (the reference the fast path is tested against)."""
    if len(data) < HEADER_SIZE:
        raise PduDecodeError("PDU shorter than its header", Status.RINVCMDLEN)
    length, command_id, status, sequence = HEADER.unpack_from(data)
    if length != len(data):
        raise PduDecodeError("command_length does not match the PDU", Status.RINVCMDLEN, command_id, sequence)
    try:
        command = CommandId(command_id)
    except ValueError:
        raise PduDecodeError(
            f"unknown command_id 0x{command_id:08x}", Status.RINVCMDID, command_id, sequence
        ) from None
    body = bytes(data[HEADER_SIZE:])
    try:
        values = _decode_body(command, status, body)
    except PduDecodeError as exc:
        exc.command_id, exc.sequence = command_id, sequence
        raise
    cls = _OURS[command]
    if cls is Bind or cls is BindResp:
        values["mode"] = BindMode(command & 0x7FFFFFFF)
    return cls(sequence=sequence, status=status, **values)


def _decode_body(command: CommandId, status: int, body: bytes) -> dict[str, Any]:
    names = _MANDATORY[command]
    if not names or not body:
        if body and not _accepts_tlvs(command):
            raise PduDecodeError(f"{command.name.lower()} carries an unexpected body", Status.RINVCMDLEN)
        return _decode_tlvs(command, body) if body else {}
    obj = _SMPPLIB[command](command.name.lower(), client=_SEQUENCE_FREE)
    tail: list[bytes] = []
    capture: Callable[[bytes], None] = tail.append
    obj.parse_optional_params = capture
    try:
        obj.parse_params(body)
    except Exception as exc:  # smpplib raises struct.error, IndexError, KeyError, ... on bad input
        raise PduDecodeError(f"malformed {command.name.lower()}: {exc!r}", Status.RINVCMDLEN) from None
    tlv_bytes = tail[0] if tail else b""
    values: dict[str, Any] = {}
    used = 0
    strings = _STRING_FIELDS[command]
    for name in names:
        value = getattr(obj, name, None)
        spec = obj.params[name]
        if value is None:
            if name in strings and used == len(body) - len(tlv_bytes):
                value = b""
                used -= 1  # a missing trailing string, as some peers send in error responses
            elif spec.type is int:
                raise PduDecodeError(f"{command.name.lower()} ends before {name}", Status.RINVCMDLEN)
            else:
                value = b""
        if name in strings:
            if not isinstance(value, bytes) or b"\x00" in value:
                raise PduDecodeError(f"bad C-octet string in {name}", Status.RINVCMDLEN)
            used += len(value) + 1
            values[name] = value.decode("latin-1")
        elif spec.type is ptypes.ostr:
            used += len(value)
            values[name] = bytes(value)
        else:
            used += spec.size
            values[name] = int(value)
    if name_missing := [n for n in names if n == "short_message" and len(values[n]) != values["sm_length"]]:
        raise PduDecodeError(f"sm_length disagrees with {name_missing[0]}", Status.RINVMSGLEN)
    values.pop("sm_length", None)
    if used + len(tlv_bytes) != len(body):
        raise PduDecodeError(f"malformed {command.name.lower()} body", Status.RINVCMDLEN)
    values.update(_decode_tlvs(command, tlv_bytes))
    return values


_MESSAGE_PDUS = frozenset({CommandId.SUBMIT_SM, CommandId.DELIVER_SM, CommandId.DATA_SM})
_TLV_CARRIERS = _MESSAGE_PDUS | {CommandId.BIND_RECEIVER_RESP, CommandId.BIND_TRANSMITTER_RESP,
                                 CommandId.BIND_TRANSCEIVER_RESP, CommandId.DATA_SM_RESP}


def _accepts_tlvs(command: CommandId) -> bool:
    return command in _TLV_CARRIERS


def _decode_tlvs(command: CommandId, data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    if command not in _TLV_CARRIERS:
        raise PduDecodeError(f"{command.name.lower()} carries unexpected optional parameters", Status.RINVCMDLEN)
    values: dict[str, Any] = {}
    other: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    message_pdu = command in _MESSAGE_PDUS
    while pos < end:
        if end - pos < 4:
            raise PduDecodeError("truncated optional parameter header", Status.RINVOPTPARSTREAM)
        tag, length = _TLV_HEADER.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise PduDecodeError(f"optional parameter 0x{tag:04x} runs past the PDU", Status.RINVOPTPARSTREAM)
        raw = data[pos : pos + length]
        pos += length
        spec = _TLV_SPEC.get(tag) if message_pdu else None
        if tag == SC_INTERFACE_VERSION and not message_pdu and length == 1:
            values["sc_interface_version"] = raw[0]
            continue
        if spec is None:
            if message_pdu:
                other.append((tag, raw))
            continue
        name, kind = spec
        if kind == "str":
            values[name] = raw.rstrip(b"\x00").decode("latin-1")
        elif kind == "bytes":
            values[name] = raw
        else:
            # Vendors differ in integer widths (a 2-octet ussd_service_op is seen in the wild).
            if not 1 <= length <= 4:
                raise PduDecodeError(f"optional parameter 0x{tag:04x} has length {length}", Status.RINVPARLEN)
            values[name] = int.from_bytes(raw, "big")
    if other:
        values["other_tlvs"] = tuple(other)
    return values


def field_names(cls: type[Pdu]) -> tuple[str, ...]:
    """Dataclass field names of a PDU class (handy for tests and logs)."""
    return tuple(f.name for f in fields(cls))


# ---- the fast path ---------------------------------------------------------------------------
# Field limits of SMPP 3.4 §5.2 (octets, the terminating NUL included).
_MAX_SERVICE_TYPE, _MAX_ADDR, _MAX_TIME, _MAX_MESSAGE_ID = 6, 21, 17, 65
_SM_MIDDLE = struct.Struct(">BBB")
_SM_TAIL = struct.Struct(">BBBBB")


def _c_string(value: str, limit: int, name: str) -> bytes:
    raw = value.encode("latin-1") if value else b""
    if len(raw) >= limit or b"\x00" in raw:
        raise PduEncodeError(f"{name} longer than {limit - 1} octets or holding a NUL")
    return raw + b"\x00"


_NO_TLV_VALUES = (None,) * len(_TLV_ORDER)


def _encode_short_message(pdu: Pdu) -> bytes:
    """submit_sm / deliver_sm: the mandatory part written as one latin-1 string (its octets as
    characters 0-255) and encoded once. A PDU with anything out of the ordinary (a field too
    long, a NUL in a string, a value out of range) goes the field-by-field way, which raises."""
    assert isinstance(pdu, SubmitSm | DeliverSm)
    try:
        service_type, source_addr, destination_addr = pdu.service_type, pdu.source_addr, pdu.destination_addr
        schedule, validity, message = pdu.schedule_delivery_time, pdu.validity_period, pdu.short_message
        if (len(service_type) < _MAX_SERVICE_TYPE and len(source_addr) < _MAX_ADDR and len(destination_addr) < _MAX_ADDR
                and len(schedule) < _MAX_TIME and len(validity) < _MAX_TIME and len(message) <= 254
                and "\x00" not in service_type + source_addr + destination_addr + schedule + validity):
            head = (
                f"{service_type}\x00{chr(pdu.source_addr_ton)}{chr(pdu.source_addr_npi)}{source_addr}\x00"
                f"{chr(pdu.dest_addr_ton)}{chr(pdu.dest_addr_npi)}{destination_addr}\x00{chr(pdu.esm_class)}"
                f"{chr(pdu.protocol_id)}{chr(pdu.priority_flag)}{schedule}\x00{validity}\x00"
                f"{chr(pdu.registered_delivery)}{chr(pdu.replace_if_present_flag)}{chr(pdu.data_coding)}"
                f"{chr(pdu.sm_default_msg_id)}{chr(len(message))}"
            ).encode("latin-1")
            tlvs = b"" if _TLV_VALUES(pdu) == _NO_TLV_VALUES and not pdu.other_tlvs else _encode_tlvs(pdu)
            return b"".join((HEADER.pack(HEADER_SIZE + len(head) + len(message) + len(tlvs), pdu.command_id,
                                         pdu.status, pdu.sequence), head, message, tlvs))
    except Exception:  # the field-by-field way below raises what is wrong
        return _encode_short_message_stepwise(pdu)
    return _encode_short_message_stepwise(pdu)


def _encode_short_message_stepwise(pdu: Pdu) -> bytes:
    """`_encode_short_message` one field at a time: the path of a PDU the fast one does not take,
    which says what is wrong with it, and the reference the tests hold the fast one to."""
    assert isinstance(pdu, SubmitSm | DeliverSm)
    try:
        message = pdu.short_message
        if len(message) > 254:
            raise PduEncodeError("short_message longer than 254 octets (use message_payload)")
        body = b"".join((
            _c_string(pdu.service_type, _MAX_SERVICE_TYPE, "service_type"),
            bytes((pdu.source_addr_ton, pdu.source_addr_npi)),
            _c_string(pdu.source_addr, _MAX_ADDR, "source_addr"),
            bytes((pdu.dest_addr_ton, pdu.dest_addr_npi)),
            _c_string(pdu.destination_addr, _MAX_ADDR, "destination_addr"),
            _SM_MIDDLE.pack(pdu.esm_class, pdu.protocol_id, pdu.priority_flag),
            _c_string(pdu.schedule_delivery_time, _MAX_TIME, "schedule_delivery_time"),
            _c_string(pdu.validity_period, _MAX_TIME, "validity_period"),
            _SM_TAIL.pack(pdu.registered_delivery, pdu.replace_if_present_flag, pdu.data_coding,
                          pdu.sm_default_msg_id, len(message)),
            message,
            _encode_tlvs(pdu),
        ))
    except (struct.error, ValueError, UnicodeEncodeError, OverflowError) as exc:
        if isinstance(exc, PduEncodeError):
            raise
        raise PduEncodeError(f"cannot encode {pdu.command_id.name.lower()}: {exc}") from exc
    return HEADER.pack(HEADER_SIZE + len(body), pdu.command_id, pdu.status, pdu.sequence) + body


def _encode_message_id_resp(pdu: Pdu, sequence: int | None = None) -> bytes:
    assert isinstance(pdu, SubmitSmResp | DeliverSmResp)
    if pdu.status:
        body = b""  # SMPP 3.4 §4: an error response carries no body
    else:
        try:
            body = _c_string(pdu.message_id, _MAX_MESSAGE_ID, "message_id")
        except UnicodeEncodeError as exc:
            raise PduEncodeError(f"message_id: {exc}") from exc
    return HEADER.pack(HEADER_SIZE + len(body), pdu.command_id, pdu.status,
                       pdu.sequence if sequence is None else sequence) + body


def _encode_header_only(pdu: Pdu, sequence: int | None = None) -> bytes:
    return HEADER.pack(HEADER_SIZE, pdu.command_id, pdu.status, pdu.sequence if sequence is None else sequence)


_FAST_ENCODERS: dict[type[Pdu], Callable[[Any], bytes]] = {
    SubmitSm: _encode_short_message,
    DeliverSm: _encode_short_message,
    SubmitSmResp: _encode_message_id_resp,
    DeliverSmResp: _encode_message_id_resp,
    EnquireLink: _encode_header_only,
    EnquireLinkResp: _encode_header_only,
    Unbind: _encode_header_only,
    UnbindResp: _encode_header_only,
    GenericNack: _encode_header_only,
}

# The encoders that take the sequence number apart from the PDU (`encode(pdu, sequence)`).
_NUMBERED_ENCODERS: dict[type[Pdu], Callable[[Any, int], bytes]] = {
    cls: fast for cls, fast in _FAST_ENCODERS.items() if fast in (_encode_message_id_resp, _encode_header_only)
}


def _read_c_string(data: bytes, pos: int, name: str) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise PduDecodeError(f"{name} is not NUL-terminated", Status.RINVCMDLEN)
    return data[pos:end].decode("latin-1"), end + 1


# The mandatory part of submit_sm / deliver_sm after the header, in one regex match: five C-octet
# strings, each the bytes up to its first NUL (as `_read_c_string` reads them), and the fixed-size
# octets between them (any value, NULs included). A body it does not match is read field by field,
# which says what is wrong with it.
_SM_MANDATORY = re.compile(
    rb"([^\x00]*)\x00(..)([^\x00]*)\x00(..)([^\x00]*)\x00(...)([^\x00]*)\x00([^\x00]*)\x00(.....)", re.DOTALL)
# The fields of a message PDU in their dataclass order: the header's two, the TLVs (`MessageTlvs`),
# then the mandatory body; the fast path builds PDUs positionally (a keyword call costs more).
_TLV_FIELDS = tuple(f.name for f in fields(MessageTlvs))[2:]
_NO_TLVS: tuple[Any, ...] = (None,) * (len(_TLV_FIELDS) - 1) + ((),)
_TLV_SLOT = {tag: (_TLV_FIELDS.index(name), kind) for tag, (name, kind) in _TLV_SPEC.items()}
_OTHER_SLOT = _TLV_FIELDS.index("other_tlvs")
_SM_BODY_FIELDS = ("service_type", "source_addr_ton", "source_addr_npi", "source_addr", "dest_addr_ton",
                   "dest_addr_npi", "destination_addr", "esm_class", "protocol_id", "priority_flag",
                   "schedule_delivery_time", "validity_period", "registered_delivery", "replace_if_present_flag",
                   "data_coding", "sm_default_msg_id", "short_message")
assert tuple(f.name for f in fields(SubmitSm)) == ("sequence", "status", *_TLV_FIELDS, *_SM_BODY_FIELDS)
assert tuple(f.name for f in fields(DeliverSm)) == ("sequence", "status", *_TLV_FIELDS, *_SM_BODY_FIELDS)


def _message_tlvs(data: bytes, pos: int) -> tuple[Any, ...]:
    """The TLVs of a submit_sm / deliver_sm from `pos` on, in `_TLV_FIELDS` order: what
    `_decode_tlvs` reads, with the same errors."""
    end = len(data)
    if pos >= end:
        return _NO_TLVS
    values: list[Any] = list(_NO_TLVS)
    other: list[tuple[int, bytes]] = []
    header = _TLV_HEADER.unpack_from
    while pos < end:
        if end - pos < 4:
            raise PduDecodeError("truncated optional parameter header", Status.RINVOPTPARSTREAM)
        tag, length = header(data, pos)
        start = pos + 4
        pos = start + length
        if pos > end:
            raise PduDecodeError(f"optional parameter 0x{tag:04x} runs past the PDU", Status.RINVOPTPARSTREAM)
        spec = _TLV_SLOT.get(tag)
        if spec is None:
            other.append((tag, data[start:pos]))
            continue
        slot, kind = spec
        if kind == "str":
            values[slot] = data[start:pos].rstrip(b"\x00").decode("latin-1")
        elif kind == "bytes":
            values[slot] = data[start:pos]
        elif 1 <= length <= 4:  # vendors differ in integer widths (a 2-octet ussd_service_op is seen in the wild)
            values[slot] = int.from_bytes(data[start:pos], "big")
        else:
            raise PduDecodeError(f"optional parameter 0x{tag:04x} has length {length}", Status.RINVPARLEN)
    if other:
        values[_OTHER_SLOT] = tuple(other)
    return tuple(values)


def _decode_short_message(cls: type[SubmitSm | DeliverSm]) -> Callable[[bytes, int, int], Pdu]:
    stepwise = _decode_short_message_stepwise(cls)
    make: Callable[..., Pdu] = cls  # called with every field in order (`_SM_BODY_FIELDS`)
    match = _SM_MANDATORY.match
    tail = _SM_TAIL.unpack

    def decode_sm(data: bytes, status: int, sequence: int) -> Pdu:
        found = match(data, HEADER_SIZE)
        if found is None:
            return stepwise(data, status, sequence)  # raises what is wrong
        (service_type, source_ton_npi, source_addr, dest_ton_npi, destination_addr, middle, schedule_delivery_time,
         validity_period, fixed) = found.groups()
        registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id, sm_length = tail(fixed)
        pos = found.end()
        end = pos + sm_length
        if end > len(data):
            raise PduDecodeError("sm_length runs past the PDU", Status.RINVMSGLEN)
        return make(
            sequence, status, *_message_tlvs(data, end),
            service_type.decode("latin-1"), source_ton_npi[0], source_ton_npi[1], source_addr.decode("latin-1"),
            dest_ton_npi[0], dest_ton_npi[1], destination_addr.decode("latin-1"), middle[0], middle[1], middle[2],
            schedule_delivery_time.decode("latin-1"), validity_period.decode("latin-1"), registered_delivery,
            replace_if_present_flag, data_coding, sm_default_msg_id, data[pos:end],
        )

    return decode_sm


def _decode_short_message_stepwise(cls: type[SubmitSm | DeliverSm]) -> Callable[[bytes, int, int], Pdu]:
    """`decode_sm` one field at a time: the path of a body the regex does not match, and the
    reference the tests hold the fast one to."""
    command = cls.command_id

    def decode_sm(data: bytes, status: int, sequence: int) -> Pdu:
        try:
            service_type, pos = _read_c_string(data, HEADER_SIZE, "service_type")
            source_addr_ton, source_addr_npi = data[pos], data[pos + 1]
            source_addr, pos = _read_c_string(data, pos + 2, "source_addr")
            dest_addr_ton, dest_addr_npi = data[pos], data[pos + 1]
            destination_addr, pos = _read_c_string(data, pos + 2, "destination_addr")
            esm_class, protocol_id, priority_flag = _SM_MIDDLE.unpack_from(data, pos)
            schedule_delivery_time, pos = _read_c_string(data, pos + 3, "schedule_delivery_time")
            validity_period, pos = _read_c_string(data, pos, "validity_period")
            registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id, sm_length = (
                _SM_TAIL.unpack_from(data, pos))
        except (IndexError, struct.error):
            raise PduDecodeError(f"{command.name.lower()} ends inside its mandatory part",
                                 Status.RINVCMDLEN) from None
        pos += 5
        end = pos + sm_length
        if end > len(data):
            raise PduDecodeError("sm_length runs past the PDU", Status.RINVMSGLEN)
        tlvs = _decode_tlvs(command, data[end:]) if end < len(data) else {}
        return cls(
            sequence=sequence, status=status, service_type=service_type, source_addr_ton=source_addr_ton,
            source_addr_npi=source_addr_npi, source_addr=source_addr, dest_addr_ton=dest_addr_ton,
            dest_addr_npi=dest_addr_npi, destination_addr=destination_addr, esm_class=esm_class,
            protocol_id=protocol_id, priority_flag=priority_flag, schedule_delivery_time=schedule_delivery_time,
            validity_period=validity_period, registered_delivery=registered_delivery,
            replace_if_present_flag=replace_if_present_flag, data_coding=data_coding,
            sm_default_msg_id=sm_default_msg_id, short_message=data[pos:end], **tlvs,
        )

    return decode_sm


def _decode_message_id_resp(cls: type[SubmitSmResp | DeliverSmResp]) -> Callable[[bytes, int, int], Pdu]:
    def decode_resp(data: bytes, status: int, sequence: int) -> Pdu:
        if len(data) == HEADER_SIZE:
            return cls(sequence=sequence, status=status)  # error responses come without a body
        message_id, pos = _read_c_string(data, HEADER_SIZE, "message_id")
        if pos != len(data):
            raise PduDecodeError(f"{cls.command_id.name.lower()} carries bytes after message_id", Status.RINVCMDLEN)
        return cls(sequence=sequence, status=status, message_id=message_id)

    return decode_resp


def _decode_header_only(cls: type[Pdu]) -> Callable[[bytes, int, int], Pdu]:
    def decode_empty(data: bytes, status: int, sequence: int) -> Pdu:
        if len(data) != HEADER_SIZE:
            raise PduDecodeError(f"{cls.command_id.name.lower()} carries an unexpected body", Status.RINVCMDLEN)
        return cls(sequence=sequence, status=status)

    return decode_empty


_FAST_DECODERS: dict[int, Callable[[bytes, int, int], Pdu]] = {
    CommandId.SUBMIT_SM: _decode_short_message(SubmitSm),
    CommandId.DELIVER_SM: _decode_short_message(DeliverSm),
    CommandId.SUBMIT_SM_RESP: _decode_message_id_resp(SubmitSmResp),
    CommandId.DELIVER_SM_RESP: _decode_message_id_resp(DeliverSmResp),
    CommandId.ENQUIRE_LINK: _decode_header_only(EnquireLink),
    CommandId.ENQUIRE_LINK_RESP: _decode_header_only(EnquireLinkResp),
    CommandId.UNBIND: _decode_header_only(Unbind),
    CommandId.UNBIND_RESP: _decode_header_only(UnbindResp),
    CommandId.GENERIC_NACK: _decode_header_only(GenericNack),
}

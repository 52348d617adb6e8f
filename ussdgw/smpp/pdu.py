"""SMPP 3.4 PDUs as frozen dataclasses: the events the session layer hands out and takes in.

Nothing here does I/O or knows the wire format; `codec.py` turns these into bytes and back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, fields
from enum import IntEnum
from operator import attrgetter
from typing import Any, ClassVar, TypeVar

# A PDU (or what one says) is a `record`: see there for why not a frozen dataclass.
from ussdgw.records import record as pdu_class


class CommandId(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class Status(IntEnum):
    """command_status values the platform sends or acts on (SMPP 3.4 §5.1.3)."""

    ROK = 0x00
    RINVMSGLEN = 0x01
    RINVCMDLEN = 0x02
    RINVCMDID = 0x03
    RINVBNDSTS = 0x04
    RALYBND = 0x05
    RSYSERR = 0x08
    RINVSRCADR = 0x0A
    RINVDSTADR = 0x0B
    RINVMSGID = 0x0C
    RBINDFAIL = 0x0D
    RINVPASWD = 0x0E
    RINVSYSID = 0x0F
    RMSGQFUL = 0x14
    RINVESMCLASS = 0x43
    RTHROTTLED = 0x58
    RX_T_APPN = 0x64
    RX_P_APPN = 0x65
    RX_R_APPN = 0x66
    RQUERYFAIL = 0x67
    RINVOPTPARSTREAM = 0xC0
    RINVPARLEN = 0xC2
    RINVOPTPARAMVAL = 0xC4
    RDELIVERYFAILURE = 0xFE
    RUNKNOWNERR = 0xFF


class BindMode(IntEnum):
    """The bind command ids; the mode decides which way messages may flow."""

    RECEIVER = CommandId.BIND_RECEIVER
    TRANSMITTER = CommandId.BIND_TRANSMITTER
    TRANSCEIVER = CommandId.BIND_TRANSCEIVER

    @property
    def can_send(self) -> bool:
        return self is not BindMode.RECEIVER

    @property
    def can_receive(self) -> bool:
        return self is not BindMode.TRANSMITTER


class EsmClass:
    """Bits of esm_class that the platform reads or sets."""

    DELIVERY_RECEIPT = 0x04
    INTERMEDIATE_NOTIFICATION = 0x20  # message type 1000: an MT's progress (ENROUTE, ...), not its fate
    UDHI = 0x40
    MESSAGE_TYPE_MASK = 0x3C  # 0: a plain message; any other type (receipts, acks, notifications) is no MO


class UssdOp(IntEnum):
    """ussd_service_op TLV values (SMPP 3.4 §5.3.2.44)."""

    PSSD_INDICATION = 0
    PSSR_INDICATION = 1
    USSR_REQUEST = 2
    USSN_REQUEST = 3
    PSSD_RESPONSE = 16
    PSSR_RESPONSE = 17
    USSR_CONFIRM = 18
    USSN_CONFIRM = 19


class MessageState(IntEnum):
    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


class Tag(IntEnum):
    """TLV tags the codec knows by name; any other tag is kept as raw bytes."""

    USER_MESSAGE_REFERENCE = 0x0204
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    RECEIPTED_MESSAGE_ID = 0x001E
    MESSAGE_STATE = 0x0427
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    USSD_SERVICE_OP = 0x0501
    ITS_SESSION_INFO = 0x1383


@pdu_class
class Pdu:
    command_id: ClassVar[CommandId]
    sequence: int = 0
    status: int = 0

    @property
    def is_response(self) -> bool:
        return bool(command_of(self) & 0x80000000)


@pdu_class
class GenericNack(Pdu):
    command_id: ClassVar[CommandId] = CommandId.GENERIC_NACK


@pdu_class
class Bind(Pdu):
    """bind_receiver / bind_transmitter / bind_transceiver, told apart by `mode`."""

    mode: BindMode = BindMode.TRANSCEIVER
    system_id: str = ""
    password: str = field(default="", repr=False)
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    @property
    def command(self) -> CommandId:
        return CommandId(self.mode.value)


@pdu_class
class BindResp(Pdu):
    mode: BindMode = BindMode.TRANSCEIVER
    system_id: str = ""
    sc_interface_version: int | None = None

    @property
    def command(self) -> CommandId:
        return CommandId(self.mode.value | 0x80000000)


@pdu_class
class Unbind(Pdu):
    command_id: ClassVar[CommandId] = CommandId.UNBIND


@pdu_class
class UnbindResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.UNBIND_RESP


@pdu_class
class EnquireLink(Pdu):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK


@pdu_class
class EnquireLinkResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK_RESP


@pdu_class
class MessageTlvs(Pdu):
    """Optional parameters shared by submit_sm, deliver_sm and data_sm."""

    user_message_reference: int | None = None
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None
    receipted_message_id: str | None = None
    message_state: int | None = None
    network_error_code: bytes | None = None
    message_payload: bytes | None = None
    ussd_service_op: int | None = None
    its_session_info: int | None = None
    other_tlvs: tuple[tuple[int, bytes], ...] = ()


@pdu_class
class ShortMessagePdu(MessageTlvs):
    """The mandatory body of submit_sm and deliver_sm (identical in SMPP 3.4)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""

    @property
    def is_ussd(self) -> bool:
        return self.ussd_service_op is not None

    @property
    def is_delivery_receipt(self) -> bool:
        return bool(self.esm_class & EsmClass.DELIVERY_RECEIPT)

    @property
    def payload(self) -> bytes:
        """The user data, wherever the sender put it (message_payload wins when present)."""
        return self.message_payload if self.message_payload is not None else self.short_message


@pdu_class
class SubmitSm(ShortMessagePdu):
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM


@pdu_class
class DeliverSm(ShortMessagePdu):
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM


@pdu_class
class DataSm(MessageTlvs):
    command_id: ClassVar[CommandId] = CommandId.DATA_SM
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0


@pdu_class
class SubmitSmResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM_RESP
    message_id: str = ""


@pdu_class
class DeliverSmResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM_RESP
    message_id: str = ""


@pdu_class
class DataSmResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.DATA_SM_RESP
    message_id: str = ""


@pdu_class
class QuerySm(Pdu):
    command_id: ClassVar[CommandId] = CommandId.QUERY_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""


@pdu_class
class QuerySmResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.QUERY_SM_RESP
    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


REQUEST_RESPONSE: dict[CommandId, CommandId] = {
    CommandId.BIND_RECEIVER: CommandId.BIND_RECEIVER_RESP,
    CommandId.BIND_TRANSMITTER: CommandId.BIND_TRANSMITTER_RESP,
    CommandId.BIND_TRANSCEIVER: CommandId.BIND_TRANSCEIVER_RESP,
    CommandId.QUERY_SM: CommandId.QUERY_SM_RESP,
    CommandId.SUBMIT_SM: CommandId.SUBMIT_SM_RESP,
    CommandId.DELIVER_SM: CommandId.DELIVER_SM_RESP,
    CommandId.UNBIND: CommandId.UNBIND_RESP,
    CommandId.ENQUIRE_LINK: CommandId.ENQUIRE_LINK_RESP,
    CommandId.DATA_SM: CommandId.DATA_SM_RESP,
}


def command_of(pdu: Pdu) -> CommandId:
    """The command id of any PDU, binds included (their id depends on the mode)."""
    try:
        return pdu.command_id  # every class's own but the binds'
    except AttributeError:
        assert isinstance(pdu, Bind | BindResp), type(pdu)
        return pdu.command


P = TypeVar("P", bound=Pdu)


_AFTER_SEQUENCE: dict[type[Pdu], Callable[[Pdu], tuple[Any, ...]]] = {}


def with_sequence(pdu: P, sequence: int) -> P:
    """`pdu` numbered `sequence`. What `dataclasses.replace` does, at half its cost: the session
    numbers every PDU it sends, and a submit_sm has 28 fields. A PDU numbered so already is itself
    (frozen: nothing to copy)."""
    if pdu.sequence == sequence:
        return pdu
    cls = type(pdu)
    rest = _AFTER_SEQUENCE.get(cls)
    if rest is None:
        names = [f.name for f in fields(cls)]
        assert names[0] == "sequence", cls  # every PDU starts with Pdu's fields
        get = attrgetter(*names[1:])
        rest = _AFTER_SEQUENCE[cls] = get if len(names) > 2 else lambda pdu: (get(pdu),)
    return cls(sequence, *rest(pdu))

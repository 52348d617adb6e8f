"""Inbound long-message reassembly (pure, no I/O).

A long MO arrives as parts marked either by a UDH (``esm_class`` bit 0x40, IE 0x00 or 0x08) or by
the SAR TLVs; :func:`parse_udh` reads the former, the caller reads the latter, and both feed the
same :class:`Reassembler`.

The reassembler joins *encoded* payloads; the caller decodes the whole with
``text.decode_text`` afterwards. That is what makes it correct when a sender cut a UTF-16
surrogate pair or a GSM escape sequence across parts (ours never do; other implementations may),
and for GSM 7-bit it means joining unpacked septets, which SMPP carries one per octet.

A part that cannot be placed raises :class:`ConcatError` (a ``ValueError``): the peer sent it, so
the caller answers it with an error status and the session goes on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "ConcatError",
    "ConcatInfo",
    "ExpiredMessage",
    "Reassembler",
    "parse_udh",
]

_IE_CONCAT_8BIT = 0x00
_IE_CONCAT_16BIT = 0x08
_MAX_TOTAL = 255
_MAX_REFERENCE = 0xFFFF


class ConcatError(ValueError):
    """A malformed UDH, or a part inconsistent with the message it claims to belong to."""


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    """Which part of which long message this is (TS 23.040 9.2.3.24.1 and .8)."""

    reference: int
    total: int
    seqnum: int


def parse_udh(short_message: bytes) -> tuple[ConcatInfo | None, bytes]:
    """Split a UDHI ``short_message`` into its concatenation info and the payload after the UDH.

    Other IEs are skipped; if the concatenation IE appears more than once the last one counts,
    and one numbering zero parts or a part beyond its total is ignored (both per TS 23.040
    9.2.3.24), giving ``None``: the caller then treats the message as whole. A UDH that overruns
    the data, or a concatenation IE of the wrong length, raises :class:`ConcatError`.
    """
    if not short_message:
        raise ConcatError("UDHI set but short_message is empty")
    udh_end = 1 + short_message[0]
    if udh_end > len(short_message):
        raise ConcatError(f"UDH length {short_message[0]} exceeds the {len(short_message) - 1} octets left")
    info: ConcatInfo | None = None
    pos = 1
    while pos < udh_end:
        if pos + 2 > udh_end:
            raise ConcatError(f"truncated information element header at octet {pos}")
        iei = short_message[pos]
        ie_end = pos + 2 + short_message[pos + 1]
        if ie_end > udh_end:
            raise ConcatError(f"information element 0x{iei:02X} overruns the UDH")
        value = short_message[pos + 2 : ie_end]
        if iei == _IE_CONCAT_8BIT:
            if len(value) != 3:
                raise ConcatError(f"concatenation IE 0x00 has length {len(value)}, expected 3")
            info = _valid_or_none(ConcatInfo(value[0], value[1], value[2]))
        elif iei == _IE_CONCAT_16BIT:
            if len(value) != 4:
                raise ConcatError(f"concatenation IE 0x08 has length {len(value)}, expected 4")
            info = _valid_or_none(ConcatInfo(value[0] << 8 | value[1], value[2], value[3]))
        pos = ie_end
    return info, short_message[udh_end:]


def _valid_or_none(info: ConcatInfo) -> ConcatInfo | None:
    return info if 1 <= info.seqnum <= info.total else None


@dataclass(frozen=True, slots=True)
class ExpiredMessage:
    """An incomplete message that was dropped, for the caller to log.

    ``evicted`` is true when it made room under ``max_pending`` rather than timing out.
    """

    key: tuple[str, str]
    reference: int
    received: int
    total: int
    evicted: bool = False


@dataclass(slots=True)
class _Pending:
    total: int
    data_coding: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    """Collects the parts of long messages until each is complete, with bounded memory.

    A message is identified by ``key`` (source_addr, destination_addr) and its reference. Pass
    ``now`` from a monotonic clock: expiry walks the pending messages oldest first and stops at
    the first one still young. A message is dropped ``timeout`` seconds after its first part
    arrived; past ``max_pending`` the oldest is evicted. Both are reported by :meth:`expire`,
    which remembers at most ``max_pending`` drops between calls.
    """

    def __init__(self, timeout: float = 60.0, max_pending: int = 10_000) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: dict[tuple[tuple[str, str], int], _Pending] = {}
        self._dropped: deque[ExpiredMessage] = deque(maxlen=max_pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        key: tuple[str, str],
        ref: int,
        total: int,
        seq: int,
        payload: bytes,
        data_coding: int,
        now: float,
    ) -> bytes | None:
        """Store one part; return the joined payloads once all ``total`` parts are in, else None.

        A repeated part is ignored (the first copy wins). A part that contradicts itself or the
        parts already held (another total or data_coding for the same reference) raises
        :class:`ConcatError` and leaves the held parts untouched, so one bad part cannot destroy
        a good message; a stale reference stops blocking once it times out.
        """
        if not 1 <= total <= _MAX_TOTAL:
            raise ConcatError(f"total {total} out of range 1..{_MAX_TOTAL}")
        if not 1 <= seq <= total:
            raise ConcatError(f"part {seq} out of range 1..{total}")
        if not 0 <= ref <= _MAX_REFERENCE:
            raise ConcatError(f"reference {ref} out of range 0..{_MAX_REFERENCE}")
        slot = (key, ref)
        pending = self._pending.get(slot)
        if pending is not None and now - pending.started >= self.timeout:
            self._drop(slot, evicted=False)
            pending = None
        if pending is None:
            if total == 1:
                return payload
            if len(self._pending) >= self.max_pending:
                self._drop(next(iter(self._pending)), evicted=True)
            pending = self._pending[slot] = _Pending(total, data_coding, now)
        elif pending.total != total:
            raise ConcatError(f"part {seq} says {total} parts, earlier parts said {pending.total}")
        elif pending.data_coding != data_coding:
            raise ConcatError(
                f"part {seq} has data_coding 0x{data_coding:02X}, earlier parts 0x{pending.data_coding:02X}"
            )
        pending.parts.setdefault(seq, payload)
        if len(pending.parts) < total:
            return None
        del self._pending[slot]
        return b"".join(pending.parts[i] for i in range(1, total + 1))

    def expire(self, now: float) -> list[ExpiredMessage]:
        """Drop messages older than ``timeout``; return them with any evicted since the last call."""
        while self._pending:
            slot, pending = next(iter(self._pending.items()))
            if now - pending.started < self.timeout:
                break
            self._drop(slot, evicted=False)
        dropped = list(self._dropped)
        self._dropped.clear()
        return dropped

    def _drop(self, slot: tuple[tuple[str, str], int], *, evicted: bool) -> None:
        pending = self._pending.pop(slot)
        self._dropped.append(ExpiredMessage(slot[0], slot[1], len(pending.parts), pending.total, evicted))

"""SMS text encodings for SMPP 3.4: decode by ``data_coding``, choose, encode and split.

Pure functions, no I/O.

Why our own GSM 03.38 table and not a library
---------------------------------------------
The default alphabet is 128 code points plus 10 extension characters, fixed by TS 23.038 for decades;
the table below is cheaper to own than a dependency we would have to wrap anyway. The candidates
were looked at (2025):

- ``smpplib.gsm`` (already a dependency) has no decoder, a wrong table (no ``§``: 0x5F holds a
  filler), and cuts escape sequences across parts (its own FIXME).
- ``gsm0338`` 1.1.0 has correct tables, but drops a trailing lone escape without a trace, encodes
  U+001B as a bare escape (so ``"\\x1b("`` comes back as ``"{"``), has no type hints and registers
  a global codec on import.
- ``gsmcodecs`` 1.0.0 is marked alpha and replaces bad input with ``?``, hiding it from the logs.

None of them counts septets, which splitting needs. The table here was checked code point by code
point against ``gsm0338``'s Unicode names.

Decoding rules
--------------
Inbound text must never crash the session, so decoding is lossy rather than strict: malformed
input (a byte above 0x7F or a lone escape at the end of GSM 7-bit data, an odd-length or lone
surrogate in UCS2, a byte undefined in the chosen 8-bit set) decodes to U+FFFD. As TS 23.038 says,
an escape followed by a code missing from the extension table shows the basic-table character, and
escape-escape (reserved for a second extension table) shows a space. Only a ``data_coding`` we
cannot interpret raises :class:`TextDecodeError`.

GSM 7-bit travels *unpacked* in SMPP: one septet per octet; the SMSC packs it for the air.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

__all__ = [
    "SplitMessage",
    "TextDecodeError",
    "choose_encoding",
    "decode_text",
    "encode_text",
    "split_text",
]

GSM7 = 0x00
IA5 = 0x01
LATIN1 = 0x03
UCS2 = 0x08

_REPLACEMENT = "\ufffd"
_ESC = 0x1B

# TS 23.038 6.2.1; index = septet. 0x1B is the escape to the extension table, never a character.
_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# TS 23.038 6.2.1.1, reached by 0x1B + septet.
_GSM7_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
_GSM7_ENCODE: dict[str, bytes] = {
    char: bytes((septet,)) for septet, char in enumerate(_GSM7_BASIC) if septet != _ESC
}
_GSM7_ENCODE.update({char: bytes((_ESC, septet)) for septet, char in _GSM7_EXTENSION.items()})

_SINGLE_GSM7_SEPTETS = 160
_SINGLE_OCTETS = 140
_MAX_PARTS = 255


class TextDecodeError(ValueError):
    """The peer sent a ``data_coding`` we cannot interpret: the message can never be decoded."""

    def __init__(self, data_coding: int, reason: str) -> None:
        super().__init__(f"cannot decode data_coding 0x{data_coding:02X}: {reason}")
        self.data_coding = data_coding


class _Alphabet(enum.Enum):
    GSM7 = "gsm7"
    ASCII = "ascii"
    LATIN1 = "latin-1"
    BINARY = "binary"
    CYRILLIC = "iso8859-5"
    HEBREW = "iso8859-8"
    UCS2 = "utf-16-be"


# SMPP 3.4 5.2.19 redefines 0x00-0x0F; 0x0F is reserved there, but USSD gateways pass the CBS
# scheme "GSM 7-bit, language unspecified" (TS 23.038 5) through it.
_SMPP_CODINGS = {
    0x00: _Alphabet.GSM7,
    0x01: _Alphabet.ASCII,
    0x02: _Alphabet.BINARY,
    0x03: _Alphabet.LATIN1,
    0x04: _Alphabet.BINARY,
    0x06: _Alphabet.CYRILLIC,
    0x07: _Alphabet.HEBREW,
    0x08: _Alphabet.UCS2,
    0x0F: _Alphabet.GSM7,
}
_GENERAL_ALPHABETS = (_Alphabet.GSM7, _Alphabet.BINARY, _Alphabet.UCS2)


def _alphabet(data_coding: int) -> _Alphabet:
    """Map a ``data_coding`` to its alphabet: SMPP's own values, then TS 23.038 4's coding groups."""
    known = _SMPP_CODINGS.get(data_coding)
    if known is not None:
        return known
    if 0x10 <= data_coding <= 0x7F:  # general data coding, with or without automatic deletion
        if data_coding & 0x20:
            raise TextDecodeError(data_coding, "compressed text is not supported")
        bits = (data_coding >> 2) & 0x03
        if bits == 0x03:
            raise TextDecodeError(data_coding, "reserved alphabet")
        return _GENERAL_ALPHABETS[bits]
    if 0xC0 <= data_coding <= 0xDF:  # message waiting indication, discard or store
        return _Alphabet.GSM7
    if 0xE0 <= data_coding <= 0xEF:  # message waiting indication, store, UCS2
        return _Alphabet.UCS2
    if 0xF0 <= data_coding <= 0xFF:  # message class; bit 3 is reserved and ignored
        return _Alphabet.BINARY if data_coding & 0x04 else _Alphabet.GSM7
    raise TextDecodeError(data_coding, "unknown or unsupported coding")


def _decode_gsm7(data: bytes) -> str:
    out: list[str] = []
    i = 0
    end = len(data)
    while i < end:
        septet = data[i]
        i += 1
        if septet != _ESC:
            out.append(_GSM7_BASIC[septet] if septet < 0x80 else _REPLACEMENT)
            continue
        if i == end:
            out.append(_REPLACEMENT)
            break
        code = data[i]
        i += 1
        if code >= 0x80:
            out.append(_REPLACEMENT)
        elif code == _ESC:
            out.append(" ")
        else:
            out.append(_GSM7_EXTENSION.get(code, _GSM7_BASIC[code]))
    return "".join(out)


def decode_text(data: bytes, data_coding: int) -> str:
    """Decode an SMPP ``short_message`` (UDH already removed) by its ``data_coding``.

    Malformed input decodes to U+FFFD (see the module docstring); only an uninterpretable
    ``data_coding`` raises :class:`TextDecodeError`. 8-bit binary decodes as Latin-1 so that
    nothing is lost and the text can still be logged or matched.
    """
    alphabet = _alphabet(data_coding)
    if alphabet is _Alphabet.GSM7:
        return _decode_gsm7(data)
    if alphabet is _Alphabet.BINARY:
        return data.decode("latin-1")
    return data.decode(alphabet.value, errors="replace")


def choose_encoding(text: str) -> int:
    """Return 0 (GSM 7-bit) when every character fits the default alphabet, else 8 (UCS2).

    GSM 7-bit gets 160 characters into one SMS where UCS2 gets 70, so it wins whenever it can.
    """
    return GSM7 if _GSM7_CHARS.issuperset(text) else UCS2


_GSM7_CHARS = frozenset(_GSM7_ENCODE)


def _encode_chars(text: str, data_coding: int) -> list[bytes]:
    """Encode character by character, so that splitting never cuts one character's octets."""
    if data_coding == GSM7:
        return [_GSM7_ENCODE.get(char, b"?") for char in text]
    codec = {IA5: "ascii", LATIN1: "latin-1", UCS2: "utf-16-be"}.get(data_coding)
    if codec is None:
        raise ValueError(f"cannot encode text as data_coding 0x{data_coding:02X}: use 0, 1, 3 or 8")
    return [char.encode(codec, errors="replace") for char in text]


def encode_text(text: str, data_coding: int, *, cache: bool = False) -> bytes:
    """Encode ``text`` as 0 (unpacked GSM 7-bit), 1 (IA5), 3 (Latin-1) or 8 (UCS2).

    A character the chosen coding lacks (or a lone surrogate in UCS2) becomes ``?``: a reply with
    a visible placeholder beats no reply. Use :func:`choose_encoding` to avoid that. Any other
    ``data_coding`` is the caller's mistake and raises ``ValueError``. ``cache``: as for
    :func:`split_text` (a text sent again and again, never one with a secret in it).
    """
    if cache and len(text) <= _CACHED_TEXT_MAX:
        return _encode_cached(text, data_coding)
    return b"".join(_encode_chars(text, data_coding))


@functools.lru_cache(maxsize=512)
def _encode_cached(text: str, data_coding: int) -> bytes:
    return b"".join(_encode_chars(text, data_coding))


@dataclass(frozen=True, slots=True)
class SplitMessage:
    """What to put in each ``submit_sm``: the same ``data_coding`` and UDHI flag for all parts."""

    data_coding: int
    esm_class_udhi: bool
    parts: tuple[bytes, ...]


def _part_capacity(data_coding: int, udh_octets: int) -> int:
    """Payload octets per part once the UDH (with its length octet) takes its share of 140."""
    if data_coding == GSM7:
        return _SINGLE_GSM7_SEPTETS - (udh_octets * 8 + 6) // 7  # the UDH is padded to a septet
    if data_coding == UCS2:
        return (_SINGLE_OCTETS - udh_octets) // 2 * 2
    return _SINGLE_OCTETS - udh_octets


def split_text(
    text: str,
    data_coding: int | None = None,
    *,
    reference: int,
    use_16bit_ref: bool = False,
    cache: bool = False,
) -> SplitMessage:
    """Encode ``text`` and split it into SMS parts with a concatenation UDH when it is too long.

    ``data_coding`` defaults to :func:`choose_encoding`; 1 and 3 are budgeted as 8-bit (140 octets)
    because the SMSC may send them as such. A GSM escape sequence or a UTF-16 surrogate pair is
    never cut across parts, since a handset would show both halves as garbage. ``cache``: the text
    is one the platform sends again and again (a help text, a menu screen; never one with a secret
    in it), so its encoding and cut are kept and reused, only the UDH is made afresh. Raises
    ``ValueError`` for more than 255 parts, a ``reference`` out of range, or an unsupported coding.
    """
    if data_coding is None:
        data_coding = _choose_cached(text) if cache and len(text) <= _CACHED_TEXT_MAX else choose_encoding(text)
    ref_limit = 0xFFFF if use_16bit_ref else 0xFF
    if not 0 <= reference <= ref_limit:
        raise ValueError(f"reference {reference} out of range 0..{ref_limit}")
    udh_octets = 7 if use_16bit_ref else 6
    split = _split_cached if cache and len(text) <= _CACHED_TEXT_MAX else _split_payloads
    concatenated, payloads = split(text, data_coding, udh_octets)
    if not concatenated:
        return SplitMessage(data_coding, False, payloads)
    total = len(payloads)
    if use_16bit_ref:
        head = bytes((0x06, 0x08, 0x04, reference >> 8, reference & 0xFF, total))
    else:
        head = bytes((0x05, 0x00, 0x03, reference, total))
    parts = tuple(head + bytes((seq,)) + payload for seq, payload in enumerate(payloads, start=1))
    return SplitMessage(data_coding, True, parts)


def _split_payloads(text: str, data_coding: int, udh_octets: int) -> tuple[bool, tuple[bytes, ...]]:
    """(whether parts need a concatenation UDH, the payload of each part after its UDH)."""
    chars = _encode_chars(text, data_coding)
    single_limit = _SINGLE_GSM7_SEPTETS if data_coding == GSM7 else _SINGLE_OCTETS
    if sum(map(len, chars)) <= single_limit:
        return False, (b"".join(chars),)

    capacity = _part_capacity(data_coding, udh_octets)
    payloads: list[bytes] = []
    current = bytearray()
    for encoded in chars:
        if len(current) + len(encoded) > capacity:
            payloads.append(bytes(current))
            current.clear()
        current += encoded
    payloads.append(bytes(current))
    if len(payloads) > _MAX_PARTS:
        raise ValueError(f"text needs {len(payloads)} parts, more than the {_MAX_PARTS} a UDH can number")
    return True, tuple(payloads)


# Encoding character by character is the costly part of a reply, and the same help and menu
# texts go out over and over: those (and only those: `cache=True`) are cut once.
_CACHED_TEXT_MAX = 4096
_split_cached = functools.lru_cache(maxsize=512)(_split_payloads)
_choose_cached = functools.lru_cache(maxsize=512)(choose_encoding)

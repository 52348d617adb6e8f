"""The `detail` of a P10 audit entry as structured fields: `key=value key=value`, written by
`render` and read back by `parse`, whatever the values hold.

A value that is a plain token (no blank, `=`, quote or backslash) stays bare; any other is a JSON
string (`merchant="Shop x=1"`), so a value can never pose as a field of its own. Characters that
are not printable — C0/C1 controls, DEL, format characters like the bidi overrides, line and
paragraph separators, lone surrogates — are escaped as `\\uXXXX` wherever they occur (`clean`,
which the store applies to every detail it writes), so no audit line can be broken up or disguised
by what a subscriber or a peer typed.
"""

from __future__ import annotations

import contextlib
import json
import re
import unicodedata

__all__ = ["MAX_VALUE", "clean", "parse", "render"]

MAX_VALUE = 128
"""Characters kept of one value; a longer one is cut and marked with `…`."""

_BARE = re.compile(r'[^\s="\\]+')
_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: a UTF-16 surrogate pair, as JSON writes it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def clean(text: str) -> str:
    """`text` with every character that is not printable escaped as `\\uXXXX`."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _HIDDEN else c for c in text)


def render(**fields: object) -> str:
    """`key=value ...` for the given fields (None skipped); values are cut at `MAX_VALUE`."""
    # What the gateway writes per MO, MT and receipt is ids, states, short codes and counts: ASCII
    # letters and digits (or an int), written bare as they are, or nothing at all (`""`). Any other
    # value is left to `_render_each`, which quotes, escapes and cuts.
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if type(value) is not str and type(value) is not int:
            return _render_each(fields)
        text = str(value)
        if not text:
            parts.append(f'{key}=""')
        elif len(text) <= MAX_VALUE and text.isascii() and (type(value) is int or text.isalnum()):
            parts.append(f"{key}={text}")
        else:
            return _render_each(fields)
    return " ".join(parts)


def _render_each(fields: dict[str, object]) -> str:
    """`render`, one value at a time: quoted, escaped and cut as each needs."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if len(text) > MAX_VALUE:
            text = text[:MAX_VALUE] + "…"
        if text.isascii() and text.isprintable() and _BARE.fullmatch(text):
            parts.append(f"{key}={text}")  # a plain token (ids, states, counts): nothing to quote or escape
            continue
        if not _BARE.fullmatch(text) or clean(text) != text:
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={clean(text)}")
    return " ".join(parts)


def parse(detail: str) -> dict[str, str]:
    """The fields of a detail `render` wrote (and of the older plain `key=value` ones)."""
    fields = {}
    for key, raw in _FIELD.findall(detail):
        if raw.startswith('"'):
            with contextlib.suppress(ValueError):  # a detail cut mid-string keeps its raw text
                raw = json.loads(raw)
        fields[key] = raw
    return fields

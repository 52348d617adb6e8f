"""Short-lived numeric codes: SMS archive (A1), bonus gift confirmation (M6), e-mail recovery.

A code is stored only as :func:`code_digest`, an HMAC-SHA256 under a server-side key,
never in plain. A 6-digit code has only a million values, so an unkeyed hash would be
reversed at once by anyone who reads a Redis dump; with the key it cannot be, and a
check on the hot path still costs one HMAC instead of a slow hash. The digest binds
the purpose and the MSISDN, so a gift code cannot open an SMS archive and one
subscriber's code does not match another's record. Expiry and attempt counting are
the store's job (Redis TTL), not this module's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum
from typing import Final

__all__ = [
    "MIN_KEY_BYTES",
    "CodePurpose",
    "code_digest",
    "code_matches",
    "generate_code",
]

MIN_CODE_DIGITS: Final = 4
MAX_CODE_DIGITS: Final = 12
MIN_KEY_BYTES: Final = 16
"""Shorter keys are refused: the key is the only thing that hides a 6-digit code."""


class CodePurpose(StrEnum):
    """Domain separation for digests: the same code means different things per purpose."""

    SMS_ARCHIVE = "sms_archive"
    BONUS_GIFT = "bonus_gift"
    EMAIL_RECOVERY = "email_recovery"


def generate_code(digits: int = 6) -> str:
    """Return a uniformly random, zero-padded numeric code of *digits* digits."""
    if not MIN_CODE_DIGITS <= digits <= MAX_CODE_DIGITS:
        raise ValueError(f"code length must be {MIN_CODE_DIGITS}..{MAX_CODE_DIGITS} digits, got {digits}")
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def _field(value: str) -> bytes:
    """Length-prefix a field so ("ab", "c") and ("a", "bc") never hash alike."""
    data = value.encode()
    return len(data).to_bytes(4, "big") + data


def code_digest(key: bytes, purpose: str, msisdn: str, code: str) -> str:
    """Return the hex HMAC-SHA256 of (*purpose*, *msisdn*, *code*) under *key*."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"code key must be at least {MIN_KEY_BYTES} bytes")
    message = _field(purpose) + _field(msisdn) + _field(code)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def code_matches(key: bytes, purpose: str, msisdn: str, code: str, digest: str) -> bool:
    """True if *code* is the one whose digest was stored; constant-time."""
    expected = code_digest(key, purpose, msisdn, code)
    return hmac.compare_digest(expected.encode(), digest.encode())

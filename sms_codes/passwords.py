"""Self-care passwords: generation (P1), storage (P2) and the change rules (P7).

Generated password (P1)
    Exactly 5 digits and 3 to 5 lower-case Latin letters, shuffled, from ``secrets``.
    Letters come from :data:`LETTERS`: ``a``-``z`` without ``l`` and ``o``, which are
    read as ``1`` and ``0`` on a phone screen. Passwords are lower-case only so the
    subscriber never has to guess a letter's case.

Checksum rule (the document's "digits and letters make certain sums")
    Let *S* be the sum of the digits plus the sum of the letters' alphabet positions
    (a=1 ... z=26, e.g. ``k`` = 11). A generated password satisfies ``S % 11 == 7``.
    Generation rejection-samples until the rule holds, so valid passwords stay uniformly
    distributed. A random string of the P1 shape passes with probability ~1/11, so sign-in
    (:func:`precheck`) turns away ~91 % of random guesses without running scrypt. The rule
    is public, so it costs ~3.5 bits: ~34 bits of min-entropy remain (the 3-letter
    passwords are the weakest). The P4 lock (3 tries) is what protects the account; the
    checksum only saves CPU.

User-chosen password (P7)
    At least 6 and at most :data:`MAX_LENGTH` characters, Latin letters and digits only
    (``*`` and ``#`` are USSD control characters), with at least one upper-case letter,
    one lower-case letter and one digit. Such a password always has an upper-case letter,
    so it can never have the P1 shape: the two kinds are told apart by shape alone.

Storage (P2)
    ``scrypt$n$r$p$salt_b64$hash_b64``. The parameters are read back from the stored
    string, so they can be raised later; :func:`needs_rehash` tells when to upgrade.
    ``hashlib.scrypt`` releases the GIL while it runs (~40 ms at n=2**14), so async
    callers should run :func:`hash_password` / :func:`verify_password` in a thread to keep
    the event loop responsive (the platform runs them on its bounded pool, ``ussdgw.costly``).

Errors: :class:`NewPasswordError` (a ``ValueError``) carries ``.reply``, the Russian
text to send back; subclasses are :class:`PasswordMismatchError` and
:class:`WeakPasswordError`. ``str()`` of these errors never contains a password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

__all__ = [
    "CHECKSUM_MODULUS",
    "CHECKSUM_REMAINDER",
    "LETTERS",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "NewPasswordError",
    "PasswordMismatchError",
    "WeakPasswordError",
    "check_new_password",
    "checksum_ok",
    "generate_password",
    "hash_password",
    "is_generated_shape",
    "is_strong_user_password",
    "needs_rehash",
    "precheck",
    "verify_password",
]

DIGITS: Final = "0123456789"
LETTERS: Final = "abcdefghijkmnpqrstuvwxyz"
"""Letters used in generated passwords: a-z without ``l`` and ``o`` (look like 1 and 0)."""
DIGIT_COUNT: Final = 5
MIN_LETTERS: Final = 3
MAX_LETTERS: Final = 5
CHECKSUM_MODULUS: Final = 11
CHECKSUM_REMAINDER: Final = 7

MIN_LENGTH: Final = 6
MAX_LENGTH: Final = 64
"""Upper bound for user-chosen passwords, so nobody feeds megabytes to scrypt."""

_ASCII_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGIT_SET: Final = frozenset(DIGITS)
_LETTER_SET: Final = frozenset(LETTERS)
_USER_ALPHABET: Final = _ASCII_UPPER | _ASCII_LOWER | _DIGIT_SET

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
_SCHEME: Final = "scrypt"
# Bounds for parameters read back from storage: a corrupted row must not make us
# allocate gigabytes. scrypt needs ~128 * r * n bytes.
_MAX_MEMORY: Final = 2**28
_MAX_P: Final = 16

_MSG_MISMATCH: Final = "Пароли не совпадают. Пароль не изменён."
_MSG_WEAK: Final = (
    "Пароль должен быть не короче 6 символов и содержать строчные и заглавные "
    "латинские буквы и цифры. Пароль не изменён."
)
_MSG_TOO_LONG: Final = f"Пароль должен быть не длиннее {MAX_LENGTH} символов. Пароль не изменён."
_MSG_SAME: Final = "Новый пароль должен отличаться от старого. Пароль не изменён."


class NewPasswordError(ValueError):
    """A new password was refused (P7); ``reply`` is what to tell the subscriber."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class PasswordMismatchError(NewPasswordError):
    """The new password and its repetition differ."""


class WeakPasswordError(NewPasswordError):
    """The new password breaks the P7 strength rule or equals the old one."""


def _checksum(password: str) -> int:
    total = 0
    for ch in password:
        total += int(ch) if ch in _DIGIT_SET else ord(ch) - ord("a") + 1
    return total % CHECKSUM_MODULUS


def generate_password(rng: secrets.SystemRandom | None = None) -> str:
    """Return a new P1 password that satisfies the checksum rule."""
    rng = rng or secrets.SystemRandom()
    while True:
        letter_count = rng.randint(MIN_LETTERS, MAX_LETTERS)
        chars = [rng.choice(DIGITS) for _ in range(DIGIT_COUNT)]
        chars += [rng.choice(LETTERS) for _ in range(letter_count)]
        rng.shuffle(chars)
        candidate = "".join(chars)
        if _checksum(candidate) == CHECKSUM_REMAINDER:
            return candidate


def is_generated_shape(password: str) -> bool:
    """True if *password* looks like a P1 password (checksum not checked)."""
    digits = letters = 0
    for ch in password:
        if ch in _DIGIT_SET:
            digits += 1
        elif ch in _LETTER_SET:
            letters += 1
        else:
            return False
    return digits == DIGIT_COUNT and MIN_LETTERS <= letters <= MAX_LETTERS


def checksum_ok(password: str) -> bool:
    """True only for a P1-shaped password whose checksum holds."""
    return is_generated_shape(password) and _checksum(password) == CHECKSUM_REMAINDER


def is_strong_user_password(password: str) -> bool:
    """True if *password* meets the P7 rule for a subscriber-chosen password."""
    chars = set(password)
    return (
        MIN_LENGTH <= len(password) <= MAX_LENGTH
        and chars <= _USER_ALPHABET
        and bool(chars & _ASCII_UPPER)
        and bool(chars & _ASCII_LOWER)
        and bool(chars & _DIGIT_SET)
    )


def precheck(password: str) -> bool:
    """Cheap sign-in filter: could *password* be any password we ever store?

    A ``False`` answer should be treated exactly like a wrong password (counted for the
    P4 lock, same reply); it only spares the scrypt run.
    """
    return checksum_ok(password) or is_strong_user_password(password)


def check_new_password(old: str, new: str, repeat: str) -> None:
    """Raise a :class:`NewPasswordError` if the P7 change must be refused.

    Pure: the caller verifies *old* against the stored hash before calling this.
    """
    if not hmac.compare_digest(new.encode(), repeat.encode()):
        raise PasswordMismatchError(_MSG_MISMATCH)
    if len(new) > MAX_LENGTH:
        raise WeakPasswordError(_MSG_TOO_LONG)
    if not is_strong_user_password(new):
        raise WeakPasswordError(_MSG_WEAK)
    if hmac.compare_digest(new.encode(), old.encode()):
        raise WeakPasswordError(_MSG_SAME)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL refuses work above its 32 MiB default unless maxmem is raised.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def hash_password(password: str) -> str:
    """Return the storable scrypt string for *password* with a fresh salt. CPU-heavy."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """Split a stored hash; the error message never echoes the stored value."""
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != _SCHEME:
            raise ValueError
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("malformed stored password hash") from None
    power_of_two = n > 1 and n & (n - 1) == 0
    if not (power_of_two and r > 0 and 128 * r * n <= _MAX_MEMORY and 0 < p <= _MAX_P):
        raise ValueError("stored password hash has out-of-range scrypt parameters")
    if not salt or not key:
        raise ValueError("malformed stored password hash")
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """Check *password* against a stored scrypt string in constant time. CPU-heavy.

    Raises ``ValueError`` if *stored* is not one of our hashes: that is a data fault,
    not a wrong password.
    """
    n, r, p, salt, key = _parse(stored)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def needs_rehash(stored: str) -> bool:
    """True if *stored* was made with other than the current parameters."""
    n, r, p, salt, key = _parse(stored)
    return (n, r, p, len(salt), len(key)) != (SCRYPT_N, SCRYPT_R, SCRYPT_P, SALT_BYTES, KEY_BYTES)

"""Secret handling without I/O: self-care passwords, short-lived codes, resend refusals in words.

Nothing here touches Redis, the network or a log; the store and the handlers do, and
call in here for every decision about a secret.
"""

from sms_codes.codes import MIN_KEY_BYTES, CodePurpose, code_digest, code_matches, generate_code
from sms_codes.limits import HOUR_S, OPERATOR_TZ, format_retry_reply
from sms_codes.passwords import (
    CHECKSUM_MODULUS,
    CHECKSUM_REMAINDER,
    LETTERS,
    MAX_LENGTH,
    MIN_LENGTH,
    NewPasswordError,
    PasswordMismatchError,
    WeakPasswordError,
    check_new_password,
    checksum_ok,
    generate_password,
    hash_password,
    is_generated_shape,
    is_strong_user_password,
    needs_rehash,
    precheck,
    verify_password,
)

__all__ = [
    "CHECKSUM_MODULUS",
    "CHECKSUM_REMAINDER",
    "HOUR_S",
    "LETTERS",
    "MAX_LENGTH",
    "MIN_KEY_BYTES",
    "MIN_LENGTH",
    "OPERATOR_TZ",
    "CodePurpose",
    "NewPasswordError",
    "PasswordMismatchError",
    "WeakPasswordError",
    "check_new_password",
    "checksum_ok",
    "code_digest",
    "code_matches",
    "format_retry_reply",
    "generate_code",
    "generate_password",
    "hash_password",
    "is_generated_shape",
    "is_strong_user_password",
    "needs_rehash",
    "precheck",
    "verify_password",
]

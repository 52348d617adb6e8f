"""Secret handling without I/O: self-care passwords, short-lived codes, resend refusals in words.

Nothing here touches Redis, the network or a log; the store and the handlers do, and
call in here for every decision about a secret.
"""

from sms_codes import passwords
from sms_codes.attempts import SlidingWindow, client_key
from sms_codes.codes import MIN_KEY_BYTES, CodePurpose, code_digest, code_matches, generate_code
from sms_codes.limits import HOUR_S, OPERATOR_TZ, format_retry_reply
from sms_codes.passwords import *  # noqa: F403 (the names its __all__ lists, named there once)

__all__ = [
    "HOUR_S",
    "MIN_KEY_BYTES",
    "OPERATOR_TZ",
    "CodePurpose",
    "SlidingWindow",
    "client_key",
    "code_digest",
    "code_matches",
    "format_retry_reply",
    "generate_code",
]
__all__ += passwords.__all__

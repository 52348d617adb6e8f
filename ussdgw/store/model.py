"""What callers hand to the store and get back: MTs, audit events, D2 counters."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import orjson

from ussdgw.audit_detail import clean
from ussdgw.records import record


def new_mt_id() -> str:
    """A fresh MT id: 128 random bits in hex (what `uuid4().hex` gave, without building a UUID per MT)."""
    return os.urandom(16).hex()


@record
class OutboundMessage:
    """An MT waiting to be sent. `text` may hold a secret: it is sealed before it reaches Redis."""

    mt_id: str
    source: str
    destination: str
    text: str
    ussd_service_op: int | None = None
    its_session_info: int | None = None
    secret: bool = False
    # The end of the lease under which this process holds it (never stored: the lease zset is the
    # truth); its sender renews it while it waits, and gives up sending if it is lost.
    leased_until: float = 0.0
    reaches_blocked: bool = False  # N3: the one answer a blocked number gets (why it was refused)

    def leased(self, until: float) -> OutboundMessage:
        """This MT held under a lease ending `until` (`dataclasses.replace`, without its field walk)."""
        return OutboundMessage(self.mt_id, self.source, self.destination, self.text, self.ussd_service_op,
                               self.its_session_info, self.secret, until, self.reaches_blocked)

    def to_json(self) -> bytes:
        fields: dict[str, object] = {
            "mt_id": self.mt_id, "source": self.source, "destination": self.destination, "text": self.text,
            "ussd_service_op": self.ussd_service_op, "its_session_info": self.its_session_info,
            "secret": self.secret,
        }
        if self.reaches_blocked:
            fields["reaches_blocked"] = True
        return orjson.dumps(fields)  # UTF-8 JSON, as json.dumps(ensure_ascii=False) wrote it; sealed per MT

    @classmethod
    def from_json(cls, data: bytes) -> OutboundMessage:
        return cls(**json.loads(data))


@record
class AuditEvent:
    """P10: what happened, through which channel, with what outcome. Never a secret in `detail`."""

    event: str
    channel: str
    outcome: str = "ok"
    detail: str = ""

    def fields(self, now: float) -> list[str]:
        """The entry's field/value pairs, flat; nothing unprintable gets in (`audit_detail.clean`:
        `detail` is best written by `audit_detail.render`, as structured fields). The first five
        always in this order (`AUDIT_FIELDS`); a field added later goes after them."""
        return ["ts", f"{now:.3f}", "event", clean(self.event), "channel", clean(self.channel),
                "outcome", clean(self.outcome), "detail", clean(self.detail)]

    def packed(self, now: float) -> str:
        """The entry as the audit list keeps it, but its number (`lua/prelude.lua`, `audit_push`):
        the `AUDIT_FIELDS` values apart by `AUDIT_SEPARATOR`, cleaned as `fields` cleans them. One
        argument to a script instead of ten."""
        return (f"{now:.3f}\x1f{clean(self.event)}\x1f{clean(self.channel)}\x1f{clean(self.outcome)}"
                f"\x1f{clean(self.detail)}")


@dataclass(frozen=True, slots=True)
class RateGuard:
    """D2: at most `per_hour` in the last hour and one per `cooldown_s`, for one counter `name`.

    The policy itself runs in Redis (`lua/prelude.lua`, `rate_check`), inside the step it guards."""

    name: str
    cooldown_s: int
    per_hour: int


AUDIT_FIELDS = ("ts", "event", "channel", "outcome", "detail")
"""The values every audit entry holds, in the order `lua/prelude.lua` (`audit_add`) packs them."""
AUDIT_SEPARATOR = "\x1f"


def audit_entry(raw: bytes) -> dict[str, str]:
    """One packed audit entry as a dict: `id` (its number in the trail), the `AUDIT_FIELDS`, and
    any further name/value pairs."""
    parts = raw.decode().split(AUDIT_SEPARATOR)
    entry = {"id": parts[0], **dict(zip(AUDIT_FIELDS, parts[1:6], strict=False))}
    extra = parts[6:]
    entry.update(zip(extra[0::2], extra[1::2], strict=False))
    return entry

"""An audit entry packed in Python for a script (`AuditEvent.packed`) is the entry the script would
have packed from its fields, and nothing a value holds can split it into more fields."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ussdgw.store.model import AUDIT_FIELDS, AUDIT_SEPARATOR, AuditEvent, audit_entry


def stored(entry_id: int, packed: str) -> bytes:
    """What `audit_push` (lua/prelude.lua) leaves on the list: the entry's number, then the entry."""
    return f"{entry_id}{AUDIT_SEPARATOR}{packed}".encode()


def test_a_packed_entry_holds_the_values_of_its_fields_in_their_order() -> None:
    event = AuditEvent("mt_receipt", "sms", outcome="failed", detail="mt=ab12 state=UNDELIVERABLE err=000")
    fields = event.fields(1764553963.25)
    assert event.packed(1764553963.25) == AUDIT_SEPARATOR.join(fields[1::2])
    assert audit_entry(stored(7, event.packed(1764553963.25))) == {
        "id": "7", "ts": "1764553963.250", "event": "mt_receipt", "channel": "sms", "outcome": "failed",
        "detail": "mt=ab12 state=UNDELIVERABLE err=000"}


@given(st.text(), st.text(), st.text())
def test_no_value_can_split_a_packed_entry(event: str, outcome: str, detail: str) -> None:
    packed = AuditEvent(event, "sms", outcome=outcome, detail=detail).packed(0.0)
    entry = audit_entry(stored(1, packed))
    assert set(entry) == {"id", *AUDIT_FIELDS}  # a separator or a control character in a value stays in it
    assert entry["channel"] == "sms"
    assert packed == AUDIT_SEPARATOR.join(AuditEvent(event, "sms", outcome=outcome, detail=detail).fields(0.0)[1::2])

"""Every Redis key of the platform and how long it lives.

Everything about one subscriber carries the hash tag `{<msisdn>}`, so all of one subscriber's keys
share a cluster slot and a change to one subscriber is one single-slot script. The other keys
are each read or written on their own (never in a script with a subscriber's keys):

    sub:{m}                hash     the profile (`ussdgw.store.subscribers.Profile`)
    sub:{m}:mo:<id>        string   an MO already applied (idempotency), value = its MT ids; TTL `MO_TTL_S`
    sub:{m}:outbox         hash     MT id -> sealed MT (AES-GCM: secrets never rest in plain text)
    sub:{m}:lease          zset     MT id -> time until which one gateway owns sending it
    sub:{m}:mtstate        hash     MT id -> its last known state (SUBMITTED, DELIVERED, ...); TTL `DLR_TTL_S`
    sub:{m}:audit          stream   P10 audit trail, capped near `AUDIT_MAXLEN`
    sub:{m}:rl:<name>      zset     D2 send or attempt times of one counter; TTL `RATE_WINDOW_S`
    sub:{m}:parts:<ref>    hash     parts of a long MO, seqnum -> payload; TTL `PARTS_TTL_S`
    sub:{m}:ussd           hash     the one open USSD dialogue: v = version, d = JSON; PEXPIRE at its deadline
    sub:{m}:ops            hash     operation id -> outcome (payment ids, owner changes): a retried step is not redone
    sub:{m}:holds          hash     <op> -> JSON, <op>:state, <op>:at: money or points held for another slot's step
    sub:{m}:gifts          hash     M6 incoming gifts: <tid> -> JSON, <tid>:state, <tid>:expires, code:<digest> -> tid
    sub:{m}:linked         set      N1 numbers this subscriber may act on (the holder's end of a grant)
    sub:{m}:linked_by      set      N1 numbers that may act on this subscriber (the granting end)
    sub:{m}:blacklist      set      M4 Родительский контроль: numbers this (child's) number must not reach
    sub:{m}:locator:allow  set      M4 Локатор: numbers this subscriber agreed to be located by
    sub:{m}:mms_archive    string   A2 open while it lives; TTL the archive's 72 h

Global keys, indexes that can be rebuilt from the subscribers' keys (a later change shards them):

    outbox:index           zset     msisdn -> last time an MT was queued for it (recovery scan)
    holds:index            zset     "msisdn|op" -> time held (recovery scan)
    n2:pending             zset     msisdn -> when its N2 application is due for review

Global single keys:

    dlr:<message_id>       hash     SMSC message id -> msisdn, mt_id / state, err (receipt correlation); TTL `DLR_TTL_S`
    session:<sha256>       string   P5 a signed-in session, JSON, under the token's hash; TTL the idle timeout
    sealing:check          string   a known text sealed with the key that seals the queued MTs: a process
                                    with another key refuses to start (`Store.check_sealing_key`)
"""

from __future__ import annotations

import hashlib

MO_TTL_S = 24 * 3600
DLR_TTL_S = 3 * 24 * 3600
PARTS_TTL_S = 600
RATE_WINDOW_S = 3600  # D2's sliding hour: lua/prelude.lua counts in it and lets the counters expire after it
AUDIT_MAXLEN = 2000

OUTBOX_INDEX = "outbox:index"
HOLDS_INDEX = "holds:index"
N2_PENDING = "n2:pending"


def slot_tag(msisdn: str) -> str:
    """The hash tag that puts every key of `msisdn` in one cluster slot."""
    return f"{{{msisdn}}}"


def in_slot(msisdn: str, key: str) -> bool:
    return key.startswith(f"sub:{{{msisdn}}}")


def sub_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}"


def mo_key(msisdn: str, mo_id: str) -> str:
    return f"sub:{{{msisdn}}}:mo:{mo_id}"


def outbox_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:outbox"


def lease_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:lease"


def mt_state_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:mtstate"


def audit_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:audit"


def rate_key(msisdn: str, name: str) -> str:
    return f"sub:{{{msisdn}}}:rl:{name}"


def parts_key(msisdn: str, reference: str) -> str:
    return f"sub:{{{msisdn}}}:parts:{reference}"


def ussd_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:ussd"


def ops_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:ops"


def holds_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:holds"


def gifts_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:gifts"


def linked_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:linked"


def linked_by_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:linked_by"


def blacklist_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:blacklist"


def locator_allow_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:locator:allow"


def mms_archive_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:mms_archive"


def dlr_key(message_id: str) -> str:
    return f"dlr:{message_id}"


def session_key(token: str) -> str:
    """Sessions are found by the token's SHA-256: a Redis dump holds no usable token."""
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


def hold_member(msisdn: str, op: str) -> str:
    """A hold's entry in `HOLDS_INDEX`."""
    return f"{msisdn}|{op}"


SEALING_CHECK = "sealing:check"

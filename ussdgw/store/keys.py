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
    sub:{m}:idem:<sha>     string   an API request's Idempotency-Key: its body's fingerprint and first answer

Recovery indexes, sharded into `INDEX_BUCKETS` buckets by the subscriber's number (`bucket_of`);
each bucket is one key with a hash tag of its own, so the buckets spread over the cluster's slots.
An entry is written before the change it indexes, never in the same script (one script, one slot):
a stray entry costs one look, a missing one would strand work. `ussdgw reindex` rebuilds them from
the subscribers' keys (`ussdgw.store.indexes`):

    idx:mt:{b<n>}          zset     "msisdn|mt_id" -> when to look at that MT again (its lease's end)
    idx:holds:{b<n>}       zset     "msisdn|op" -> when the hold was placed
    idx:n2:{b<n>}          zset     msisdn -> when its N2 application is due for review
    gateways:alive         zset     gateway id -> its last heartbeat (who scans which buckets)

Before the buckets, one global key per index (`LEGACY_INDEXES`): `reindex` folds them in and deletes them.

Global single keys:

    dlr:<message_id>       hash     SMSC message id -> msisdn, mt_id / state, err (receipt correlation); TTL `DLR_TTL_S`
    session:<sha256>       string   P5 a signed-in session, JSON, under the token's hash; TTL the idle timeout
    sealing:check          string   a known text sealed with the key that seals the queued MTs: a process
                                    with another key refuses to start (`Store.check_sealing_key`)
"""

from __future__ import annotations

import hashlib
import zlib

MO_TTL_S = 24 * 3600
DLR_TTL_S = 3 * 24 * 3600
PARTS_TTL_S = 600
RATE_WINDOW_S = 3600  # D2's sliding hour: lua/prelude.lua counts in it and lets the counters expire after it
AUDIT_MAXLEN = 2000

INDEX_BUCKETS = 64  # every process must agree: a constant, not a setting
GATEWAYS_ALIVE = "gateways:alive"
LEGACY_INDEXES = ("outbox:index", "holds:index", "n2:pending")


def bucket_of(msisdn: str) -> int:
    """The index bucket of every entry about `msisdn` (stable across processes and versions)."""
    return zlib.crc32(msisdn.encode()) % INDEX_BUCKETS


def mt_due_key(bucket: int) -> str:
    return f"idx:mt:{{b{bucket}}}"


def holds_due_key(bucket: int) -> str:
    return f"idx:holds:{{b{bucket}}}"


def n2_due_key(bucket: int) -> str:
    return f"idx:n2:{{b{bucket}}}"


def pair_member(msisdn: str, item: str) -> str:
    """An index entry about one MT or hold of `msisdn`: "msisdn|item"."""
    return f"{msisdn}|{item}"


def split_member(member: bytes | str) -> tuple[str, str] | None:
    text = member.decode() if isinstance(member, bytes) else member
    msisdn, sep, item = text.partition("|")
    return (msisdn, item) if sep and msisdn and item else None


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


def idempotency_key(msisdn: str, key: str) -> str:
    """A self-care request's Idempotency-Key, by its hash (any printable ASCII makes a safe key name)."""
    return f"sub:{{{msisdn}}}:idem:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def dlr_key(message_id: str) -> str:
    return f"dlr:{message_id}"


def session_key(token: str) -> str:
    """Sessions are found by the token's SHA-256: a Redis dump holds no usable token."""
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


SEALING_CHECK = "sealing:check"

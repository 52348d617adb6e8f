"""Every Redis key, Lua script and typed store operation of the platform, in one package.

    keys.py        every key builder, TTL and global key name (per-subscriber keys hash-tagged)
    indexes.py     the recovery indexes (MTs by due time, holds, N2), sharded into buckets; `reindex`
    lua/*.lua      the scripts; `prelude.lua` (the D2 policy and helpers) is prepended to each
    scripts.py     the one script registry: load by name, EVALSHA by SHA, SCRIPT LOAD on NOSCRIPT
    pipeline.py    `AutoPipeline`: commands issued meanwhile leave as one batch (hiredis-packed)
    commit.py      `Change` and `CommitResult`: the one commit engine's Python half
    core.py        `Store`: connection, `commit`/`update`, D2 peeks and attempts, audit, MT lifecycle
    profile.py     `Profile` and every change to a subscriber's own fields (passwords, block, N2, ...)
    money.py       balance, tariff, services, Автоплатёж, holds, gifts, operation marks
    numbers.py     linked numbers, blacklist, Локатор consents, the N2 review index
    grants.py      N1 grants as two ends, one in each slot;  acting.py  P10: who acts on another number
    sessions.py    P5 sessions;  archives.py  A2 MMS archive;  dialogues.py  the open USSD dialogue
    sealing.py     AES-GCM around MT bodies at rest;  model.py  MTs, audit events, D2 guards
    errors.py      `StoreUnavailable`: Redis away (the gateway answers ESME_RX_T_APPN); `SealingKeyMismatch`
    connect.py     the client for a REDIS_URL (one server or a cluster), `Probe` (PING every primary)
"""

from ussdgw.store import acting
from ussdgw.store.commit import (
    NO_CHANGE,
    STALE,
    Change,
    Check,
    CheckKind,
    CommitResult,
    DialogueStep,
    MoMark,
    Outcome,
    Write,
    WriteOp,
)
from ussdgw.store.core import Store
from ussdgw.store.errors import SealingKeyMismatch, StoreUnavailable
from ussdgw.store.keys import (
    AUDIT_MAXLEN,
    DLR_TTL_S,
    INDEX_BUCKETS,
    MO_TTL_S,
    audit_key,
    blacklist_key,
    gifts_key,
    holds_key,
    import_key,
    linked_key,
    locator_allow_key,
    mms_archive_key,
    ops_key,
    rate_key,
    session_key,
    sub_key,
    ussd_key,
)
from ussdgw.store.model import AuditEvent, OutboundMessage, RateGuard, new_mt_id
from ussdgw.store.money import Asset, Autopay, Gift, Hold
from ussdgw.store.pipeline import AutoPipeline
from ussdgw.store.profile import N2Application, Profile
from ussdgw.store.sealing import Sealer

__all__ = [
    "AUDIT_MAXLEN",
    "DLR_TTL_S",
    "INDEX_BUCKETS",
    "MO_TTL_S",
    "NO_CHANGE",
    "STALE",
    "Asset",
    "AuditEvent",
    "AutoPipeline",
    "Autopay",
    "Change",
    "Check",
    "CheckKind",
    "CommitResult",
    "DialogueStep",
    "Gift",
    "Hold",
    "MoMark",
    "N2Application",
    "OutboundMessage",
    "Outcome",
    "Profile",
    "RateGuard",
    "Sealer",
    "SealingKeyMismatch",
    "Store",
    "StoreUnavailable",
    "Write",
    "WriteOp",
    "acting",
    "audit_key",
    "blacklist_key",
    "gifts_key",
    "holds_key",
    "import_key",
    "linked_key",
    "locator_allow_key",
    "mms_archive_key",
    "new_mt_id",
    "ops_key",
    "rate_key",
    "session_key",
    "sub_key",
    "ussd_key",
]

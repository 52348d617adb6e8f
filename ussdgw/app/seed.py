"""`ussdgw seed FILE`: subscribers from YAML or JSON into Redis, secrets hashed on the way in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from sms_codes import hash_password
from ussdgw.store import AuditEvent, Store

REQUIRED = ("msisdn",)
FIELDS = ("owner_id", "owner_name", "passport", "contract", "region", "corporate", "balance_kop", "tariff", "email")


class SeedError(ValueError):
    pass


def load_seed_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if isinstance(data, dict):
        data = data.get("subscribers", [])
    if not isinstance(data, list):
        raise SeedError(f"{path}: expected a list of subscribers (or a 'subscribers' key)")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not str(entry.get("msisdn", "")).isdigit():
            raise SeedError(f"{path}: subscriber #{i + 1} needs a numeric msisdn")
    return data


def _profile(entry: dict[str, Any]) -> dict[str, str | int]:
    owner = entry.get("owner") or {}
    profile: dict[str, str | int] = {
        "owner_id": str(owner.get("id", entry.get("owner_id", f"p-{entry['msisdn']}"))),
        "owner_name": str(owner.get("name", entry.get("owner_name", ""))),
        "passport": str(owner.get("passport", entry.get("passport", ""))),
        "contract": str(owner.get("contract", entry.get("contract", ""))),
        "region": str(entry.get("region", "77")),
        "corporate": int(bool(entry.get("corporate", False))),
        "balance_kop": round(float(entry.get("balance", 0)) * 100),
        "tariff": str(entry.get("tariff", "basic")),
        "email": str(entry.get("email", "")),
    }
    return profile


async def seed_subscribers(store: Store, entries: list[dict[str, Any]]) -> int:
    for entry in entries:
        profile = _profile(entry)
        if entry.get("code_word"):
            profile["code_word_hash"] = await asyncio.to_thread(hash_password, str(entry["code_word"]).casefold())
        await store.subscribers.put(str(entry["msisdn"]), profile, AuditEvent("seeded", "admin"))
    return len(entries)

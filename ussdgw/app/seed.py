"""`ussdgw seed FILE`: subscribers from YAML, JSON or JSON Lines into Redis, secrets hashed on the way in.

Built for an operator's whole base (tens of millions), not only the demo's four:

- a JSON Lines file (`.jsonl`, one subscriber per line) is read as a stream; a first pass checks
  every entry (nothing is written from a file with a bad one) and fingerprints the file;
- code words are hashed with scrypt (slow by design) in a pool of processes, one per core,
  or come pre-hashed as `code_word_hash` (an scrypt string as `sms_codes.hash_password` makes it:
  hashed elsewhere, on as many machines as wanted, the import itself runs at Redis's pace);
- profiles go to Redis in batches through the store's pipeline, each written whole, with its audit
  entry, by one script (`Subscribers.put_many`): a profile is never half-written;
- interrupted (Ctrl-C, a crash, Redis away), the same command goes on where it stopped: the store
  keeps how many leading entries are in (`Subscribers.imported`), and each profile carries the
  import's tag (the file's fingerprint), so one written after the last checkpoint is left alone.
  `--again` imports the file once more as a new import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sms_codes import hash_password, needs_rehash
from ussdgw.inputs import parse_address
from ussdgw.store import AuditEvent, Store

REQUIRED = ("msisdn",)
FIELDS = ("owner_id", "owner_name", "passport", "contract", "region", "corporate", "balance_kop", "tariff", "email")
STREAMED = (".jsonl", ".ndjson")
BATCH = 1000
HASH_CHUNK = 4  # code words per job sent to a hashing process (~0.2 s of work)
SEEDED = AuditEvent("seeded", "admin")


class SeedError(ValueError):
    pass


Row = tuple[str, dict[str, str | int]]


def _entries(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, entry) for each subscriber of the file, as read; JSON Lines as a stream."""
    if path.suffix in STREAMED:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        yield f"line {number}", json.loads(line)
                    except ValueError as exc:
                        raise SeedError(f"{path}: line {number}: not JSON ({exc})") from None
        return
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SeedError(f"{path}: not {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})") from None
    if isinstance(data, dict):
        data = data.get("subscribers", [])
    if not isinstance(data, list):
        raise SeedError(f"{path}: expected a list of subscribers (or a 'subscribers' key)")
    for i, entry in enumerate(data):
        yield f"subscriber #{i + 1}", entry


def _checked(path: Path, where: str, entry: Any, *, deep: bool = True) -> dict[str, Any]:
    """`entry` if it can be imported (`deep`: its pre-hashed code word parsed too; the import's
    second pass leaves that to the first)."""
    msisdn = parse_address(str(entry.get("msisdn", ""))) if isinstance(entry, dict) else None
    if msisdn is None:
        raise SeedError(f"{path}: {where} needs a numeric msisdn")
    checked: dict[str, Any] = entry
    checked["msisdn"] = msisdn
    stored = entry.get("code_word_hash")
    if stored is not None and deep:
        try:
            if not isinstance(stored, str):
                raise ValueError
            needs_rehash(stored)
        except ValueError:
            raise SeedError(f"{path}: {where}: code_word_hash is not an scrypt hash") from None
    try:
        float(entry.get("balance", 0))
    except (TypeError, ValueError):
        raise SeedError(f"{path}: {where}: balance is not a number") from None
    return checked


def load_seed_file(path: Path) -> list[dict[str, Any]]:
    """Every subscriber of a (small) file, checked."""
    return [_checked(path, where, entry) for where, entry in _entries(path)]


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
    if entry.get("code_word_hash"):
        profile["code_word_hash"] = str(entry["code_word_hash"])
    return profile


def _code_word(entry: dict[str, Any]) -> str | None:
    """The code word still to hash (None when there is none, or it came hashed)."""
    word = entry.get("code_word")
    return str(word).casefold() if word and not entry.get("code_word_hash") else None


async def seed_subscribers(store: Store, entries: list[dict[str, Any]]) -> int:
    """Write `entries` as they are (each overwrites its profile): for tests, scenarios and demos."""
    for entry in entries:
        profile = _profile(entry)
        word = _code_word(entry)
        if word:
            profile["code_word_hash"] = await asyncio.to_thread(hash_password, word)
        await store.subscribers.put(str(entry["msisdn"]), profile, SEEDED)
    return len(entries)


# ---- the bulk import ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Survey:
    """What the first pass found: the file's fingerprint and its number of subscribers."""

    tag: str
    total: int
    to_hash: int  # code words that come in plain text


def survey(path: Path) -> Survey:
    """Check every entry (a bad one stops the import before anything is written) and fingerprint
    the file, so that the same file resumes the same import."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    total = to_hash = 0
    for where, entry in _entries(path):
        to_hash += _code_word(_checked(path, where, entry)) is not None
        total += 1
    return Survey(digest.hexdigest()[:8], total, to_hash)


@dataclass(slots=True)
class ImportReport:
    total: int
    before: int  # entries an earlier, interrupted run had imported
    done: int  # entries in now (all of them unless interrupted)
    written: int  # profiles this run wrote
    seconds: float

    @property
    def complete(self) -> bool:
        return self.done == self.total


def _quiet_worker() -> None:
    """A hashing process leaves Ctrl-C to the import, which stops the pool itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def hash_code_words(words: list[str]) -> list[str]:
    """scrypt strings of `words` (run in a hashing process)."""
    return [hash_password(word) for word in words]


Progress = Callable[[str, int], None]  # ("hashed" | "written", how many more)


class Importer:
    """One run of an import: `run` reads the file after what is already in, hashes, writes."""

    def __init__(self, store: Store, path: Path, *, workers: int | None = None, batch: int = BATCH,
                 again: bool = False, progress: Progress | None = None, stopping: asyncio.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.path, self.batch = store, path, max(1, batch)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.again = again
        self.progress = progress or (lambda _what, _n: None)
        self.stopping = stopping or asyncio.Event()
        self.clock = clock
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def run(self, found: Survey) -> ImportReport:
        started = self.clock()
        tag = found.tag
        if self.again:  # a new import of the same file: its own tag and count
            tag = hashlib.sha256(f"{found.tag}:{time.time_ns()}".encode()).hexdigest()[:8]
        before = await self.store.subscribers.imported(tag)
        done, written = before, 0
        batches = self._batches(before)
        window: deque[asyncio.Future[list[Row]]] = deque()
        try:
            for _ in range(2 + self.workers):  # hashing runs ahead of the writes
                self._prepare_next(batches, window)
            while window and not self.stopping.is_set():
                rows = await window.popleft()
                self._prepare_next(batches, window)
                written += await self.store.subscribers.put_many(rows, SEEDED, tag)
                done += len(rows)
                await self.store.subscribers.import_advanced(tag, done)
                self.progress("written", len(rows))
        finally:
            for pending in window:
                pending.cancel()
            await asyncio.gather(*window, return_exceptions=True)
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        return ImportReport(found.total, before, done, written, self.clock() - started)

    def _batches(self, skip: int) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for i, (where, entry) in enumerate(_entries(self.path)):
            if i < skip:
                continue
            batch.append(_checked(self.path, where, entry, deep=False))
            if len(batch) == self.batch:
                yield batch
                batch = []
        if batch:
            yield batch

    def _prepare_next(self, batches: Iterator[list[dict[str, Any]]], window: deque[asyncio.Future[list[Row]]]) -> None:
        batch = next(batches, None)
        if batch is not None:
            window.append(asyncio.ensure_future(self._prepare(batch)))

    async def _prepare(self, batch: list[dict[str, Any]]) -> list[Row]:
        rows: list[Row] = [(str(e["msisdn"]), _profile(e)) for e in batch]
        plain = [(i, w) for i, w in ((i, _code_word(e)) for i, e in enumerate(batch)) if w is not None]
        if plain:
            loop = asyncio.get_running_loop()
            pool = self._hashing_pool()
            jobs = []
            for at in range(0, len(plain), HASH_CHUNK):
                chunk = plain[at:at + HASH_CHUNK]
                jobs.append(self._hash(loop, pool, chunk, rows))
            await asyncio.gather(*jobs)
        return rows

    async def _hash(self, loop: asyncio.AbstractEventLoop, pool: concurrent.futures.Executor,
                    chunk: list[tuple[int, str]], rows: list[Row]) -> None:
        hashed = await loop.run_in_executor(pool, hash_code_words, [w for _, w in chunk])
        for (i, _), stored in zip(chunk, hashed, strict=True):
            rows[i][1]["code_word_hash"] = stored
        self.progress("hashed", len(chunk))

    def _hashing_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:  # spawned, not forked: the import's loop and sockets stay here
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_quiet_worker)
        return self._pool

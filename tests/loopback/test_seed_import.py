"""`ussdgw seed` as the bulk import: real processes against a real Redis. Interrupted (Ctrl-C, or
killed outright), the same command goes on and the result is exact: every subscriber once, whole,
with one audit entry; code words hashed in processes or taken pre-hashed; a bad file writes nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from sms_codes import hash_password, verify_password
from tests.support.processes import Command, left_over, run
from ussdgw.app.seed import survey
from ussdgw.store import audit_key, import_key, sub_key
from ussdgw.store.model import audit_entry
from ussdgw.store.profile import Profile

PLAIN_EVERY = 100  # one subscriber in this many brings its code word in plain text
PREHASHED = hash_password("сирень")


def write_base(path: Path, count: int) -> dict[str, dict[str, object]]:
    """A JSON Lines base of `count` subscribers, most with a pre-hashed code word."""
    base: dict[str, dict[str, object]] = {}
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            msisdn = f"7900{i:07d}"
            entry: dict[str, object] = {
                "msisdn": msisdn, "owner": {"id": f"p-{i}", "name": f"Абонент {i}", "passport": f"4510 {i:06d}",
                                            "contract": f"D-{i}"},
                "region": "77", "balance": i % 500 + 0.25, "tariff": "smart", "email": f"u{i}@example.com",
            }
            if i % PLAIN_EVERY == 0:
                entry["code_word"] = f"Слово{i}"
            else:
                entry["code_word_hash"] = PREHASHED
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            base[msisdn] = entry
    return base


def assert_exact(url: str, base: dict[str, dict[str, object]]) -> None:
    """Every subscriber of `base` whole and with exactly one audit entry, and nobody else."""
    client = redis.Redis.from_url(url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for msisdn in base:
                pipe.hgetall(sub_key(msisdn))
                pipe.lrange(audit_key(msisdn), 0, -1)
            replies = pipe.execute()
        assert len([k for k in client.scan_iter(match="sub:*") if not k.endswith(b":audit")]) == len(base)
    finally:
        client.close()
    for (msisdn, entry), raw, trail in zip(base.items(), replies[0::2], replies[1::2], strict=True):
        profile = Profile.from_stored(msisdn, raw)
        owner = entry["owner"]
        assert isinstance(owner, dict)
        assert (profile.owner_id, profile.owner_name) == (owner["id"], owner["name"])
        assert profile.contract == owner["contract"]
        assert profile.balance_kop == round(float(str(entry["balance"])) * 100) and profile.email == entry["email"]
        assert [audit_entry(e)["event"] for e in trail] == ["seeded"], msisdn
        if "code_word_hash" in entry:
            assert profile.code_word_hash == PREHASHED
        else:
            assert verify_password(str(entry["code_word"]).casefold(), profile.code_word_hash), msisdn


def interrupted_midway(ussdgw: Callable[..., Command], url: str, path: Path, total: int,
                       sig: signal.Signals) -> Command:
    """`ussdgw seed` started and hit with `sig` once some, not all, subscribers are in."""
    client = redis.Redis.from_url(url)
    key = import_key(survey(path).tag)
    command = ussdgw("seed", str(path), "--batch", "50", "--workers", "2", REDIS_URL=url)
    deadline = time.monotonic() + 50
    try:
        while int(client.get(key) or 0) < 200:
            assert command.popen.poll() is None and time.monotonic() < deadline, command.output
            time.sleep(0.01)
        os.killpg(command.popen.pid, sig) if sig == signal.SIGKILL else command.popen.send_signal(sig)
        command.finish(30)
        assert 0 < int(client.get(key) or 0) < total, "the import was not interrupted midway"
    finally:
        client.close()
    return command


@pytest.mark.timeout(120)
def test_ctrl_c_stops_after_the_batch_and_the_same_command_goes_on_exactly(
        ussdgw: Callable[..., Command], redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "base.jsonl"
    base = write_base(path, 2000)
    first = interrupted_midway(ussdgw, redis_url, path, len(base), signal.SIGINT)
    assert first.popen.returncode == 130, first.output
    [line] = first.out
    assert line.startswith("interrupted: ") and f"of {len(base)} subscribers" in line, line
    assert not left_over(first.mark)  # the hashing processes too
    second = run(ussdgw, "seed", str(path), REDIS_URL=redis_url, timeout=60)
    assert second.popen.returncode == 0, second.output
    assert second.out[0].startswith(f"seeded {len(base)} subscribers from ")
    assert "before an interruption" in second.out[0]
    assert_exact(redis_url, base)


@pytest.mark.timeout(120)
def test_a_killed_import_leaves_nobody_half_written_or_written_twice(
        ussdgw: Callable[..., Command], redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "base.jsonl"
    base = write_base(path, 2000)
    first = interrupted_midway(ussdgw, redis_url, path, len(base), signal.SIGKILL)
    assert first.popen.returncode == -signal.SIGKILL
    again = run(ussdgw, "seed", str(path), REDIS_URL=redis_url, timeout=60)
    assert again.popen.returncode == 0, again.output
    assert_exact(redis_url, base)


def test_a_finished_import_run_again_changes_nothing_and_again_imports_once_more(
        ussdgw: Callable[..., Command], redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "base.jsonl"
    base = write_base(path, 120)
    assert run(ussdgw, "seed", str(path), REDIS_URL=redis_url).popen.returncode == 0
    repeated = run(ussdgw, "seed", str(path), REDIS_URL=redis_url)
    assert repeated.popen.returncode == 0 and "(120 of them before an interruption)" in repeated.out[0]
    assert_exact(redis_url, base)
    once_more = run(ussdgw, "seed", str(path), "--again", REDIS_URL=redis_url)
    assert once_more.popen.returncode == 0, once_more.output
    client = redis.Redis.from_url(redis_url)
    assert {client.llen(audit_key(m)) for m in base} == {2}
    client.close()


@pytest.mark.parametrize(("line", "says"), [
    ('{"msisdn": "7900000000²"}', "line 2 needs a numeric msisdn"),
    ('{"msisdn": "79000000009", "code_word_hash": "plain"}', "line 2: code_word_hash is not an scrypt hash"),
    ('{"msisdn": "79000000009", "balance": "lots"}', "line 2: balance is not a number"),
    ("{not json", "line 2: not JSON"),
    ("[1, 2]", "line 2 needs a numeric msisdn"),
])
def test_a_bad_entry_anywhere_stops_the_import_before_anything_is_written(
        ussdgw: Callable[..., Command], redis_url: str, tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "base.jsonl"
    path.write_text('{"msisdn": "79000000001"}\n' + line + "\n", encoding="utf-8")
    refused = run(ussdgw, "seed", str(path), REDIS_URL=redis_url)
    assert refused.popen.returncode == 2 and says in refused.output and "Traceback" not in refused.output
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.close()

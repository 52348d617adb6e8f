"""A profile made from the hash as Redis returned it: parsed once per distinct stored content,
never a stale or another subscriber's one."""

from __future__ import annotations

from ussdgw.store.profile import STORED, Profile


def flat(**fields: str) -> list[bytes]:
    return [item for name, value in fields.items() for item in (STORED.get(name, name).encode(), value.encode())]


def test_the_same_stored_hash_makes_the_same_profile_once() -> None:
    first = Profile.from_flat("79160000001", flat(balance_kop="25000", tariff="smart"))
    again = Profile.from_flat("79160000001", flat(balance_kop="25000", tariff="smart"))
    assert again is first  # parsed once: a dialogue's steps read an unchanged profile
    assert (first.balance_kop, first.tariff, first.exists) == (25000, "smart", True)
    pairs = flat(balance_kop="25000", tariff="smart")
    assert first == Profile.from_stored("79160000001", dict(zip(pairs[::2], pairs[1::2], strict=True)))


def test_a_changed_hash_or_another_number_is_never_served_an_earlier_profile() -> None:
    before = Profile.from_flat("79160000001", flat(balance_kop="25000", tariff="smart"))
    after = Profile.from_flat("79160000001", flat(balance_kop="100", tariff="smart"))
    assert (before.balance_kop, after.balance_kop) == (25000, 100)
    twin = Profile.from_flat("79160000002", flat(balance_kop="25000", tariff="smart"))
    assert twin.msisdn == "79160000002" and twin is not before
    assert Profile.from_flat("79160000003", []) == Profile("79160000003")  # never seen: empty, P3

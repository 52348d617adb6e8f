"""X-Forwarded-For is believed only from `api_trusted_proxies`: without them a client that names
itself another address in the header still meets its own sign-in window, and header enrichment
(P6) still sees the connection's address; behind a trusted proxy each forwarded client has its own
window, and what a client puts at the left of the chain is never taken for its address."""

from __future__ import annotations

import ipaddress

import pytest

from tests.support.selfcare_helpers import Api
from ussdgw.app.stack import Stack
from ussdgw.config import SettingsError, load_settings
from ussdgw.web import client_address, networks

LOOPBACK = networks("127.0.0.0/8")


@pytest.mark.parametrize(("peer", "chain", "proxies", "expected"), [
    ("203.0.113.9", ["198.51.100.1"], LOOPBACK, "203.0.113.9"),  # not a proxy: its header is its word
    ("127.0.0.1", [], LOOPBACK, "127.0.0.1"),  # a proxy with nothing forwarded
    ("127.0.0.1", ["198.51.100.1"], LOOPBACK, "198.51.100.1"),
    ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], LOOPBACK, "198.51.100.1"),  # the client's own left part ignored
    ("127.0.0.1", ["6.6.6.6", "198.51.100.1, 127.0.0.5"], LOOPBACK, "198.51.100.1"),  # two proxies, two headers
    ("127.0.0.1", ["127.0.0.7, 127.0.0.5"], LOOPBACK, "127.0.0.7"),  # proxies all the way: the farthest
    ("127.0.0.1", ["6.6.6.6, nonsense"], LOOPBACK, "127.0.0.1"),  # a hop that is no address stops the walk
    ("127.0.0.1", ["[2001:db8::1]:4711"], LOOPBACK, "2001:db8::1"),
    ("127.0.0.1", ["198.51.100.1:4711"], LOOPBACK, "198.51.100.1"),
    ("127.0.0.1", ["198.51.100.1"], (), "127.0.0.1"),  # no proxies configured
    (None, ["198.51.100.1"], LOOPBACK, None),
])
def test_the_client_is_the_nearest_hop_that_is_not_a_trusted_proxy(
        peer: str | None, chain: list[str], proxies: tuple[ipaddress.IPv4Network, ...], expected: str | None) -> None:
    assert client_address(peer, chain, proxies) == expected


def test_a_long_chain_is_cut_and_a_malformed_setting_stops_the_command() -> None:
    chain = [", ".join(f"127.0.0.{i % 200 + 1}" for i in range(5000))]
    assert client_address("127.0.0.1", chain, LOOPBACK) is not None
    with pytest.raises(SettingsError, match=r"USSDGW_API_TRUSTED_PROXIES=.*not-a-net.* is not an address"):
        load_settings(None, environ={"USSDGW_API_TRUSTED_PROXIES": "10.0.0.0/8, not-a-net"})


async def attempts(api: Api, forwarded: list[str]) -> list[int]:
    return [(await api.call("POST", "/sessions", body={"msisdn": "79990000000", "password": "x"},
                            headers={"X-Forwarded-For": f}))[0] for f in forwarded]


async def test_without_trusted_proxies_a_forged_header_does_not_buy_more_attempts(stack: Stack, api: Api) -> None:
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(api_client_attempts=3)
    assert await attempts(api, [f"198.51.100.{i}" for i in range(5)]) == [401, 401, 401, 429, 429]


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_window(stack: Stack, api: Api) -> None:
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(api_client_attempts=3,
                                                                     api_trusted_proxies="127.0.0.1/32")
    assert await attempts(api, ["198.51.100.1"] * 4) == [401, 401, 401, 429]
    assert await attempts(api, ["198.51.100.2"] * 3) == [401, 401, 401]
    # the client writes a fresh address at the left each time; the proxy appends the real one
    assert await attempts(api, [f"203.0.113.{i}, 198.51.100.1" for i in range(2)]) == [429, 429]


async def test_header_enrichment_believes_the_forwarded_address_only_through_a_trusted_proxy(
        stack: Stack, api: Api) -> None:
    assert stack.platform is not None
    settings = stack.platform.settings.with_overrides(api_trusted_networks="10.0.0.0/8")
    stack.platform.settings = settings
    enriched = {"X-MSISDN": "79161234567", "X-Forwarded-For": "10.1.2.3"}
    status, body = await api.call("POST", "/sessions/network", headers=enriched)
    assert status == 403 and body["error"] == "not_trusted_network", body
    stack.platform.settings = settings.with_overrides(api_trusted_proxies="127.0.0.1")
    status, body = await api.call("POST", "/sessions/network", headers=enriched)
    assert status == 201, body
    status, body = await api.call("POST", "/sessions/network",
                                  headers={**enriched, "X-Forwarded-For": "10.1.2.3, 198.51.100.1"})
    assert status == 403, body

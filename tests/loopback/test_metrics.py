"""/metrics, /health and /ready of a running stack: counts after known traffic, readiness that
follows Redis and the binds, and the Grafana dashboard asking only for metrics that exist."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observe import refresh_outbox
from tests.support.platform import eventually, send_and_wait
from tests.support.ussd_helpers import answer, dial
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.metrics import GatewayMetrics, SimulatorMetrics, exposition
from ussdgw.redis_server import EmbeddedRedis
from ussdgw.smpp.pdu import UssdOp
from ussdgw.store import AuditEvent, Change, OutboundMessage, Store

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
PHONE = "79161234567"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def gateway_url(stack: Stack) -> str:
    return stack.endpoints["selfcare"].removesuffix("/api/v1")


async def scrape(url: str) -> tuple[str, Samples, dict[str, str]]:
    """The text, every sample by (name, labels), and every family's type."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every label set that has `labels` among its labels."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


# ---- the registry ----------------------------------------------------------------------------
def test_two_sets_of_metrics_in_one_process_count_apart() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.mo.inc("sms", "issue_password", "applied")
    assert b'ussdgw_mo_total{channel="sms",outcome="applied",route="issue_password"} 1.0' in exposition(
        first.registry)
    assert b"issue_password" not in exposition(second.registry)
    SimulatorMetrics(), SimulatorMetrics()  # no clash in the global registry either


async def test_the_outbox_depth_counts_queued_mts_from_the_recovery_index(redis_url: str) -> None:
    store = Store.from_url(redis_url, secrets.token_bytes(32))
    metrics = GatewayMetrics()
    try:
        for number, count in (("79160000001", 2), ("79160000002", 1)):
            mts = [OutboundMessage(mt_id=f"{number}-{i}", source="3339", destination=number, text="hi")
                   for i in range(count)]
            await store.commit(number, Change(messages=tuple(mts)))
        await refresh_outbox(store, metrics)
        assert b"ussdgw_outbox_depth 3.0" in exposition(metrics.registry)
        assert b"ussdgw_outbox_overdue 0.0" in exposition(metrics.registry)  # leases still running
    finally:
        await store.close()


# ---- counts after known traffic ----------------------------------------------------------------
async def test_three_password_sms_show_up_in_the_gateway_and_simulator_metrics(stack: Stack) -> None:
    for _ in range(3):
        await send_and_wait(stack, PHONE, "3339", "ПАРОЛЬ")

    async def receipts_in() -> None:
        _, samples, _ = await scrape(gateway_url(stack))
        parts = value(samples, "ussdgw_smpp_submit_sm_resp_total", status="ESME_ROK")
        assert parts >= 3
        assert value(samples, "ussdgw_receipts_total", state="DELIVERED") == parts
        # every MO and every receipt was answered ESME_ROK (counted as the response leaves)
        assert value(samples, "ussdgw_smpp_deliver_sm_resp_total", status="ESME_ROK") == 3 + parts

    await eventually(receipts_in)
    text, samples, _ = await scrape(gateway_url(stack))
    assert value(samples, "ussdgw_mo_total", channel="sms", route="issue_password", outcome="applied") == 3
    parts = value(samples, "ussdgw_smpp_submit_sm_resp_total", status="ESME_ROK")
    assert value(samples, "ussdgw_mo_duration_seconds_count", channel="sms") == 3
    assert value(samples, "ussdgw_smpp_submit_sm_duration_seconds_count") == parts
    assert value(samples, "ussdgw_smpp_bind_up", bind="bind-1") == 1
    assert value(samples, "ussdgw_smpp_window_size", bind="bind-1") == stack.settings.window
    assert value(samples, "ussdgw_smpp_window_in_use", bind="bind-1") == 0
    assert value(samples, "ussdgw_smpp_bind_events_total", event="bound") == 1
    assert value(samples, "ussdgw_mt_sending") == 0 and value(samples, "ussdgw_mt_oldest_age_seconds") == 0
    assert value(samples, "ussdgw_store_pipeline_batch_size_count") >= 1
    assert value(samples, "ussdgw_store_pipeline_batch_size_sum") >= value(
        samples, "ussdgw_store_pipeline_batch_size_count")
    assert total(samples, "ussdgw_store_unavailable_total") == 0
    assert PHONE not in text and "79161" not in text  # never a number as a label

    sim_text, sim, _ = await scrape(stack.endpoints["simulator"])
    assert value(sim, "ussdgw_sim_mo_delivered_total", kind="sms") == 3
    assert value(sim, "ussdgw_sim_mo_delivered_total", kind="receipt") == parts
    assert value(sim, "ussdgw_sim_mt_total", fate="DELIVERED") == parts
    assert value(sim, "ussdgw_sim_submit_sm_total", status="ESME_ROK") == parts
    assert value(sim, "ussdgw_sim_bind_requests_total", status="ESME_ROK") == 1
    assert value(sim, "ussdgw_sim_binds") == 1 and value(sim, "ussdgw_sim_mo_pending") == 0
    assert PHONE not in sim_text


async def test_ussd_dialogues_open_close_and_time_out(stack: Stack) -> None:
    assert stack.store is not None
    await stack.store.subscribers.put(PHONE, {"owner_id": "p-1", "region": "77", "balance_kop": 10000,
                                             "tariff": "basic"}, AuditEvent("seeded", "admin"))
    screen = await dial(stack, PHONE, "*111#")
    assert screen.ussd_op == UssdOp.USSR_REQUEST
    _, samples, _ = await scrape(gateway_url(stack))
    assert value(samples, "ussdgw_ussd_dialogues_total", event="started") == 1
    assert value(samples, "ussdgw_ussd_dialogues_open") == 1
    assert value(samples, "ussdgw_mo_total", channel="ussd", route="selfcare_menu", outcome="applied") == 1

    stack.clock.advance(stack.settings.ussd_step_timeout_s + 1)  # the subscriber answers too late
    late = await answer(stack, PHONE, "1")
    assert late.ussd_op == UssdOp.PSSR_RESPONSE
    _, samples, _ = await scrape(gateway_url(stack))
    assert value(samples, "ussdgw_ussd_dialogues_total", event="timed_out") == 1
    assert value(samples, "ussdgw_ussd_dialogues_open") == 0

    balance = await dial(stack, PHONE, "*100#")  # opens and closes in one step
    assert balance.ussd_op == UssdOp.PSSR_RESPONSE
    _, samples, _ = await scrape(gateway_url(stack))
    assert value(samples, "ussdgw_ussd_dialogues_total", event="started") == 2
    assert value(samples, "ussdgw_ussd_dialogues_total", event="closed") == 1
    assert value(samples, "ussdgw_ussd_dialogues_open") == 0

    await dial(stack, PHONE, "*111#")
    stack.clock.advance(stack.settings.ussd_step_timeout_s + 1)  # nobody answers: the gauge lets it go
    _, samples, _ = await scrape(gateway_url(stack))
    assert value(samples, "ussdgw_ussd_dialogues_open") == 0


async def test_api_requests_are_counted_by_route_template_and_sign_in_refusals_by_reason(stack: Stack) -> None:
    api = stack.endpoints["selfcare"]
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(f"{api}/sessions", json={"msisdn": PHONE, "password": "wrong1"}) as response:
                assert response.status == 401
        async with http.post(f"{api}/sessions", json={"msisdn": "nonsense"}) as response:
            assert response.status == 400
        async with http.get(f"{api}/accounts/{PHONE}/balance") as response:
            assert response.status == 401
        async with http.get(f"{api}/no/such/{PHONE}") as response:
            assert response.status == 404
    text, samples, _ = await scrape(gateway_url(stack))
    assert value(samples, "ussdgw_api_signin_refusals_total", reason="wrong_password") == 2
    assert value(samples, "ussdgw_api_signin_refusals_total", reason="bad_request") == 1
    assert value(samples, "ussdgw_api_requests_total", method="POST", route="/api/v1/sessions", status="401") == 2
    assert value(samples, "ussdgw_api_requests_total", method="GET", route="/api/v1/accounts/{msisdn}/balance",
                 status="401") == 1
    assert value(samples, "ussdgw_api_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(samples, "ussdgw_api_request_duration_seconds_count", method="POST",
                 route="/api/v1/sessions") == 3
    assert PHONE not in text


# ---- readiness -------------------------------------------------------------------------------------
async def test_health_is_liveness_and_ready_says_what_is_missing_when_the_bind_drops(stack: Stack) -> None:
    assert stack.smsc is not None and stack.gateway is not None
    url = gateway_url(stack)
    assert await get_json(f"{url}/health") == (200, {"alive": True})
    assert await get_json(f"{url}/ready") == (200, {"ready": True, "checks": {"redis": "ok",
                                                                              "smpp": "1 of 1 binds bound"}})
    status, body = await get_json(f"{stack.endpoints['selfcare']}/health")
    assert status == 200 and body["status"] == "ok"

    accounts = dict(stack.smsc.accounts)
    stack.smsc.accounts.clear()  # the SMSC refuses the re-bind
    await stack.smsc.drop_connections()

    async def not_ready() -> None:
        status, body = await get_json(f"{url}/ready")
        assert status == 503, body
        assert body == {"ready": False, "checks": {"redis": "ok", "smpp": "0 of 1 binds bound"}}

    await eventually(not_ready)
    assert (await get_json(f"{url}/health"))[0] == 200  # still alive
    status, body = await get_json(f"{stack.endpoints['selfcare']}/health")
    assert status == 503 and body["checks"]["smpp"] == "0 of 1 binds bound"
    _, samples, _ = await scrape(url)
    assert value(samples, "ussdgw_smpp_bind_up", bind="bind-1") == 0

    async def refused() -> None:
        _, samples, _ = await scrape(url)
        assert value(samples, "ussdgw_smpp_bind_events_total", event="refused") >= 1
        assert value(samples, "ussdgw_smpp_bind_events_total", event="link_down") >= 1

    await eventually(refused)
    stack.smsc.accounts.update(accounts)

    async def ready_again() -> None:
        assert (await get_json(f"{url}/ready"))[0] == 200

    await eventually(ready_again, timeout=15)  # a refused bind is retried after 5 s


@pytest.fixture
async def own_redis_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, EmbeddedRedis]]:
    """A stack on a Redis of its own, which the test stops and starts again."""
    redis = EmbeddedRedis(tmp_path / "redis", persistent=False)
    await asyncio.to_thread(redis.start)
    settings = Settings(redis_url=redis.url, state_dir=str(tmp_path), secret_key=secrets.token_hex(32),
                        sim_port=0, sim_http_port=0, api_port=0, reconnect_max_s=0.5)
    stack = Stack(settings)
    try:
        await stack.start()
        assert stack.gateway is not None
        await stack.gateway.wait_bound(5)
        yield stack, redis
    finally:
        await stack.stop()
        await asyncio.to_thread(redis.stop)


async def test_ready_turns_false_while_redis_is_stopped_and_true_once_it_is_back(
        own_redis_stack: tuple[Stack, EmbeddedRedis]) -> None:
    stack, redis = own_redis_stack
    url = gateway_url(stack)
    assert (await get_json(f"{url}/ready"))[0] == 200
    await asyncio.to_thread(redis.stop)

    status, body = await get_json(f"{url}/ready")
    assert status == 503 and body["ready"] is False
    assert body["checks"]["redis"].startswith("unreachable: ") and body["checks"]["smpp"] == "1 of 1 binds bound"
    status, body = await get_json(f"{stack.endpoints['selfcare']}/health")
    assert status == 503 and body["status"] == "degraded"

    await asyncio.to_thread(redis.start)
    assert await get_json(f"{url}/ready") == (200, {"ready": True, "checks": {"redis": "ok",
                                                                              "smpp": "1 of 1 binds bound"}})


async def test_an_mo_turned_away_while_redis_is_stopped_is_counted_and_retried(
        own_redis_stack: tuple[Stack, EmbeddedRedis]) -> None:
    stack, redis = own_redis_stack
    assert stack.smsc is not None
    await asyncio.to_thread(redis.stop)
    [mo] = stack.smsc.submit_mo(PHONE, "3339", "ПАРОЛЬ")

    async def deferred() -> None:
        _, samples, _ = await scrape(gateway_url(stack))
        assert value(samples, "ussdgw_mo_total", channel="sms", route="-", outcome="deferred") >= 1
        assert value(samples, "ussdgw_store_unavailable_total", operation="mo") >= 1
        assert value(samples, "ussdgw_smpp_deliver_sm_resp_total", status="ESME_RX_T_APPN") >= 1

    await eventually(deferred)
    await asyncio.to_thread(redis.start)
    await asyncio.wait_for(mo.delivered.wait(), 20)
    _, sim, _ = await scrape(stack.endpoints["simulator"])
    assert value(sim, "ussdgw_sim_mo_retried_total", kind="sms", reason="ESME_RX_T_APPN") >= 1
    assert value(sim, "ussdgw_sim_mo_delivered_total", kind="sms") == 1
    _, samples, _ = await scrape(gateway_url(stack))
    assert value(samples, "ussdgw_mo_total", channel="sms", route="issue_password", outcome="applied") == 1


# ---- the dashboard -----------------------------------------------------------------------------------
def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\bussdgw_[a-z0-9_]+", expr)}


def family_of(name: str, types: dict[str, str]) -> str | None:
    """The family a sample name in a query belongs to (counters lose `_total`, histograms their suffix)."""
    if name in types:
        return name
    for suffix, kind in (("_total", "counter"), ("_bucket", "histogram"), ("_sum", "histogram"),
                         ("_count", "histogram")):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and types.get(base) == kind:
            return base
    return None


async def test_every_metric_the_dashboard_queries_is_served_by_a_running_stack(stack: Stack) -> None:
    await send_and_wait(stack, PHONE, "3339", "ПАРОЛЬ")
    _, _, gateway_types = await scrape(gateway_url(stack))
    _, _, sim_types = await scrape(stack.endpoints["simulator"])
    types = {**gateway_types, **sim_types}
    names = dashboard_metric_names()
    missing = sorted(n for n in names if family_of(n, types) is None)
    assert not missing, f"the dashboard asks for metrics no /metrics serves: {missing}"
    assert len(names) >= 15


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (Debian package prometheus)")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [{"record": f"dashboard:query{i}", "expr": target["expr"]} for i, target in enumerate(
        t for panel in dashboard["panels"] for t in panel.get("targets", []))]
    path = tmp_path / "rules.json"  # YAML is a superset of JSON: promtool reads it as is
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr

"""What the gateway tells an operator, on its HTTP server (the self-care API's):

    GET /metrics   Prometheus text format (`ussdgw.metrics.GatewayMetrics`, this process's registry)
    GET /health    liveness: 200 as long as the process serves HTTP
    GET /ready     readiness: 200 when Redis (every primary of a cluster) answers PING within a short
                   timeout and at least one SMPP bind is bound, else 503; the JSON body says what is wrong

and the small trackers behind the gauges read at scrape time: the USSD dialogues waiting for an
answer, the MTs being submitted, each bind's state and window. `install` wires it all into the
API's `web.Application`; the composition root calls it, so the API itself knows nothing of it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.esme import EsmeClient
from handlers.operations import STATUS_BY_CODE
from ussdgw.clock import Clock
from ussdgw.metrics import CONTENT_TYPE, GatewayMetrics, exposition
from ussdgw.smpp.pdu import UssdOp
from ussdgw.smpp.ussd import MoKind, classify_op
from ussdgw.store import Store, StoreUnavailable
from ussdgw.tasks import Tasks

if TYPE_CHECKING:
    from gateway.service import Gateway

METRICS_KEY = web.AppKey("gateway_metrics", GatewayMetrics)
PING_TIMEOUT_S = 0.5  # a Redis slower than this to answer PING is not ready to take MOs either
OUTBOX_PROBE_S = 10.0  # how often the outbox depth is counted in Redis
MAX_TRACKED_DIALOGUES = 200_000  # the open-dialogue gauge stops growing here (memory stays bounded)


# ---- readiness -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReadinessReport:
    ready: bool
    checks: dict[str, str]  # part -> "ok" or what is wrong with it

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": self.checks}


class Readiness:
    """Ready to take traffic: every Redis primary answers PING within `timeout_s` (one server: it
    does), and at least one of `clients` is bound (without clients, as for an API without a
    gateway, only Redis is checked). The store's probe asks over connections of its own.
    """

    def __init__(self, store: Store, clients: Sequence[EsmeClient] | None = None, *,
                 timeout_s: float = PING_TIMEOUT_S) -> None:
        self._probe = store.probe(timeout_s)
        self.clients = clients
        self.timeout_s = timeout_s

    async def check(self) -> ReadinessReport:
        answers = await self._probe.check()
        down = {node: answer for node, answer in answers.items() if answer != "ok"}
        if list(answers) == ["redis"]:
            checks = {"redis": answers["redis"]}
        else:
            checks = {"redis": "ok" if not down else "; ".join(f"{n}: {a}" for n, a in sorted(down.items())),
                      "redis_primaries": f"{len(answers) - len(down)} of {len(answers)} answer"}
        ready = not down
        if self.clients is not None:
            bound = sum(1 for c in self.clients if c.bound.is_set())
            checks["smpp"] = f"{bound} of {len(self.clients)} binds bound"
            ready = ready and bound > 0
        return ReadinessReport(ready, checks)

    async def close(self) -> None:
        await self._probe.close()


READINESS_KEY = web.AppKey("gateway_readiness", Readiness)


@functools.lru_cache(maxsize=256)
def route_label(handler: str) -> str:
    """A handler's name as a label: `build_router.<locals>.send_help` -> `send_help` (the handlers
    are the registry's, so the values are as few as the routes)."""
    return handler.rsplit("<locals>.", 1)[-1]


# ---- trackers read at scrape time ----------------------------------------------------------------
class MtsInFlight:
    """The MTs this process is submitting, with when it took each (a recovered MT may be sent twice
    at once: it counts once, from its first send)."""

    def __init__(self) -> None:
        self._started: dict[str, list[float]] = {}  # mt_id -> [monotonic time taken, sends running]

    def begin(self, mt_id: str) -> None:
        entry = self._started.get(mt_id)
        if entry is None:
            self._started[mt_id] = [time.monotonic(), 1.0]
        else:
            entry[1] += 1

    def end(self, mt_id: str) -> None:
        entry = self._started.get(mt_id)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._started[mt_id]

    def __len__(self) -> int:
        return len(self._started)

    def oldest_age(self) -> float:
        if not self._started:
            return 0.0
        return time.monotonic() - min(entry[0] for entry in self._started.values())


class UssdDialogues:
    """USSD dialogue events and the dialogues this process left waiting for an answer.

    Fed by the gateway after each applied USSD step (a redelivery changes nothing): which handler
    answered (`handlers.ussd` names its own outcomes `ussd.*`) and the reply's ussd_service_op.
    A dialogue counts as open until the phone answers, it is closed or released, or its step
    deadline (on the platform's clock) passes; the MSISDN is kept in memory, never as a label.
    """

    SERVICE_OUTCOMES = frozenset({"ussd.pages"})  # `ussd.*` outcomes that are a service's own screens

    def __init__(self, metrics: GatewayMetrics, clock: Clock, step_timeout_s: float) -> None:
        self.metrics = metrics
        self.clock = clock
        self.step_timeout_s = step_timeout_s
        self._open: dict[str, float] = {}  # msisdn -> step deadline

    def step(self, msisdn: str, op: int | None, session_info: int | None, handler: str,
             reply_op: int | None) -> None:
        events = self.metrics.ussd_dialogues
        if handler == "ussd.abort":
            self._open.pop(msisdn, None)
            events.inc("aborted")
            return
        if handler == "ussd.timed_out":
            self._open.pop(msisdn, None)
            events.inc("timed_out")
            return
        service = not handler.startswith("ussd.") or handler in self.SERVICE_OUTCOMES
        if service and classify_op(op, session_info) is MoKind.DIAL:
            events.inc("started")
        if reply_op == UssdOp.USSR_REQUEST:
            if msisdn in self._open or len(self._open) < MAX_TRACKED_DIALOGUES or self._prune():
                self._open[msisdn] = self.clock.now() + self.step_timeout_s
        elif reply_op == UssdOp.PSSR_RESPONSE:
            was_open = self._open.pop(msisdn, None) is not None
            if service or was_open:
                events.inc("closed")

    def open_count(self) -> int:
        self._prune()
        return len(self._open)

    def _prune(self) -> bool:
        """Forget dialogues past their deadline; True if there is room for more."""
        now = self.clock.now()
        for msisdn in [m for m, deadline in self._open.items() if deadline <= now]:
            del self._open[msisdn]
        return len(self._open) < MAX_TRACKED_DIALOGUES


def watch_gateway(metrics: GatewayMetrics, gateway: Gateway) -> None:
    """Point the scrape-time gauges at this gateway's binds, MTs and dialogues."""
    clients = gateway.clients

    def per_bind(value: Any) -> Any:
        return lambda: [((c.name,), float(value(c))) for c in clients]

    metrics.bind_up.read = per_bind(lambda c: c.bound.is_set())
    metrics.window_size.read = per_bind(lambda c: c.window)
    metrics.window_in_use.read = per_bind(lambda c: c.window_usage()[0])
    metrics.window_waiters.read = per_bind(lambda c: c.window_usage()[1])
    metrics.mt_sending.read = lambda: [((), float(len(gateway.mts_in_flight)))]
    metrics.mt_oldest_age.read = lambda: [((), gateway.mts_in_flight.oldest_age())]
    metrics.ussd_open.read = lambda: [((), float(gateway.dialogues.open_count()))]
    costly = gateway.platform.costly
    metrics.costly_pending.read = lambda: [((), float(costly.pending))]


# ---- HTTP ----------------------------------------------------------------------------------------
async def metrics_handler(request: web.Request) -> web.Response:
    body = exposition(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def health_handler(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def ready_handler(request: web.Request) -> web.Response:
    report = await request.app[READINESS_KEY].check()
    return web.json_response(report.to_json(), status=200 if report.ready else 503)


def route_template(request: web.Request) -> str:
    """The matched route's template (`/api/v1/accounts/{msisdn}/balance`), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def api_metrics(request: web.Request, handler: Any) -> web.StreamResponse:
    """Requests by method, route template and status, with their latency (outermost middleware)."""
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_template(request)
        if route != "/metrics":  # Prometheus' own scrapes are not the API's traffic
            metrics = request.app[METRICS_KEY]
            metrics.api_requests.inc(request.method, route, str(status))
            metrics.api_seconds.observe(time.perf_counter() - started, request.method, route)


def count_signin_refusal(request: web.Request, reason: str) -> None:
    """A refused sign-in, by its reason code (from the API's fixed table of codes)."""
    metrics = request.app.get(METRICS_KEY)
    if metrics is not None:
        metrics.signin_refusals.inc(reason if reason in STATUS_BY_CODE else "other")


def count_store_unavailable(request: web.Request) -> None:
    metrics = request.app.get(METRICS_KEY)
    if metrics is not None:
        metrics.store_unavailable.inc("api")


async def refresh_outbox(store: Store, metrics: GatewayMetrics) -> None:
    depth, overdue = await store.outbox_depth()
    metrics.outbox_depth.set(depth)
    metrics.outbox_overdue.set(overdue)


def install(app: web.Application, metrics: GatewayMetrics, readiness: Readiness, store: Store | None = None,
            *, outbox_probe_s: float = OUTBOX_PROBE_S) -> None:
    """/metrics, /health, /ready and the request metrics on `app`; with `store`, the outbox count
    every `outbox_probe_s` for as long as the app runs."""
    app[METRICS_KEY] = metrics
    app[READINESS_KEY] = readiness
    app.middlewares.insert(0, api_metrics)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/health", health_handler)
    app.router.add_get("/ready", ready_handler)

    async def background(app: web.Application) -> AsyncIterator[None]:
        loops = Tasks("observe-loops")
        if store is not None:
            loops.every(outbox_probe_s, lambda: refresh_outbox(store, metrics), name="outbox-probe",
                        quiet=(StoreUnavailable,))
        yield
        await loops.stop()
        await readiness.close()

    app.cleanup_ctx.append(background)

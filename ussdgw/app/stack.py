"""The whole platform in one process: Redis (embedded unless REDIS_URL), the SMSC simulator with its
HTTP API, the gateway bound to it. `ussdgw up` runs this; the tests run the same thing on free ports.

Parts start in order and stop in the reverse order (the platform's costly-work pool after the
gateway and the self-care API that submit to it, before the store). Each part pushes its own stop onto an
`AsyncExitStack` as soon as it has started, so a failure half way through `start` stops what had
started, and one stop that fails (logged) or overruns `stop_timeout_s` does not keep the others
from running. Redis and the store are started only for the parts that need them (the gateway,
the self-care API): `ussdgw smsc` runs without Redis. A redis-server already serving the state
folder (a running `ussdgw up`) is used, not started a second time over the same files.

This is where the platform's one `Clock` is made (or taken from the caller) and handed to every
part: store, gateway (and so its handlers), self-care API, SMSC simulator and mailboxes. The
simulator's "advance time" moves it for all of them; two stacks never share one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from gateway import observe
from gateway.http_api import create_app as create_http_api
from gateway.mail import SmtpMailer
from gateway.service import Gateway
from handlers.number_management import time_hook
from handlers.ports import Platform
from handlers.registry import build_router
from handlers.routing import Router
from simulator.cdr import SimulatedCarrier
from simulator.handset import Handsets
from simulator.http import create_app as create_sim_app
from simulator.http import refusal as sim_refusal
from simulator.mailbox import PostOffice
from simulator.mailbox import register_routes as register_mail_routes
from simulator.selfcare_link import SelfcareLink
from simulator.smsc import Smsc
from ussdgw.clock import Clock
from ussdgw.config import Settings
from ussdgw.connections import ConnectionLimits, Gate
from ussdgw.logs import get_logger
from ussdgw.metrics import GatewayMetrics, SimulatorMetrics
from ussdgw.redis_server import EmbeddedCluster, EmbeddedRedis
from ussdgw.store import Store
from ussdgw.web import CONNECTION_LIMITS_KEY, api_refusal, serve

log = get_logger("ussdgw.app.stack")


@dataclass
class Stack:
    settings: Settings
    clock: Clock = field(default_factory=Clock)  # the one clock every part below reads
    redis: EmbeddedRedis | None = None
    redis_cluster: EmbeddedCluster | None = None  # `up --redis-cluster`: the private cluster it started
    store: Store | None = None
    smsc: Smsc | None = None
    handsets: Handsets | None = None
    gateway: Gateway | None = None
    post_office: PostOffice | None = None  # the simulator's SMTP sink + mailbox view
    platform: Platform | None = None  # the platform as every channel's requests see it (gateway and API)
    selfcare_link: SelfcareLink | None = None  # the simulator's way to the self-care API
    endpoints: dict[str, str] = field(default_factory=dict)
    gates: dict[str, Gate] = field(default_factory=dict)  # each HTTP server's live and refused connections
    # The operator's billing and network that call detail and Локатор read: the simulated carrier's
    # here; a deployment on a real network plugs its own in at this one place.
    carrier: SimulatedCarrier = field(default_factory=SimulatedCarrier)
    # What /metrics shows: one registry for the gateway's side (gateway, store, self-care API) and
    # one for the simulator's, each served by its own HTTP server; never the process-global one.
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    sim_metrics: SimulatorMetrics = field(default_factory=SimulatorMetrics)
    # How long an HTTP server waits for requests in flight (a phone's long poll) when it stops
    # before it cancels them (aiohttp then waits as long again for them to end); and how long
    # any one part may take to stop.
    http_drain_s: float = 2.0
    stop_timeout_s: float = 20.0
    _exits: contextlib.AsyncExitStack | None = field(default=None, init=False, repr=False)
    _stopping: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def start(self, *, smsc: bool = True, gateway: bool = True, api: bool | None = None,
                    store: bool | None = None) -> Stack:
        """Start the parts asked for; `api` defaults to `gateway`, `store` to whether anything needs it."""
        if self._exits is not None:
            raise RuntimeError("the stack is already started")
        api = gateway if api is None else api
        store = (gateway or api) if store is None else store
        self._exits = contextlib.AsyncExitStack()
        try:
            if store:
                await self._start_store()
            if self.store is not None and (gateway or api):  # the parts that seal and open queued MTs
                await self.store.check_sealing_key()
            if smsc:
                await self._start_smsc()
            if self.store is not None and (gateway or api):  # after the simulator: its SMTP sink's port
                self.platform = Platform(self.store, self.settings, mailer=SmtpMailer(self.settings), clock=self.clock,
                                         billing=self.carrier, network=self.carrier)
                # Its costly pool stops after the gateway and the HTTP API (pushed later, stopped
                # earlier): nothing submits to it any more.
                self._on_stop("costly_pool", self.platform.stop)
            if gateway:
                await self._start_gateway()
            if api:
                await self._start_api()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop every started part, newest first. Safe to call twice, or when nothing started."""
        async with self._stopping:
            exits, self._exits = self._exits, None
            if exits is not None:
                await exits.aclose()

    # ---- the parts, each pushing its own stop ----------------------------------------------------
    def _on_stop(self, part: str, stop: Callable[[], Awaitable[object]]) -> None:
        assert self._exits is not None
        self._exits.push_async_callback(self._stop_part, part, stop)

    async def _stop_part(self, part: str, stop: Callable[[], Awaitable[object]]) -> None:
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                await stop()
        except TimeoutError:
            log.error("stop_timed_out", part=part, seconds=self.stop_timeout_s)
        except Exception:
            log.exception("stop_failed", part=part)

    async def _start_store(self) -> None:
        url = self.settings.redis_url or await self._embedded_cluster()
        if not url:
            redis = EmbeddedRedis(f"{self.settings.state_dir}/redis")
            url = redis.url
            if await asyncio.to_thread(redis.serving):  # another process's (`ussdgw seed` next to `up`)
                log.info("redis_shared", url=url)
            else:
                self.redis = redis
                self._on_stop("redis", lambda: asyncio.to_thread(redis.stop))  # safe on a half-started server
                # Started from the loop's own thread on purpose: the server is tied to its parent
                # thread's life (PR_SET_PDEATHSIG), and this thread lives as long as the process.
                redis.start()
        self.endpoints["redis"] = url
        self.store = Store.from_url(url, self.settings.secret_key_bytes(), lease_s=self.settings.mt_lease_s,
                                    clock=self.clock, wait_replicas=self.settings.redis_wait_replicas,
                                    wait_timeout_ms=self.settings.redis_wait_timeout_ms)
        self.store.pipeline.on_batch = self.metrics.store_batch
        self.store.pipeline.on_redirect = self.metrics.store_redirected
        self._on_stop("store", self.store.close)

    async def _embedded_cluster(self) -> str:
        """Without REDIS_URL: the URL of the private cluster under the state folder, another
        process's (`ussdgw seed` next to `up --redis-cluster`) or, with `redis_cluster`, one started
        here and stopped last; "" for the single embedded redis-server."""
        cluster = EmbeddedCluster(f"{self.settings.state_dir}/redis-cluster")
        running = await asyncio.to_thread(cluster.serving)
        if running:
            log.info("redis_shared", url=running)
            return running
        if not self.settings.redis_cluster:
            return ""
        self.redis_cluster = cluster
        self._on_stop("redis", lambda: asyncio.to_thread(cluster.stop))  # safe on a half-started cluster
        cluster.start()  # from the loop's own thread, for the reason given for the single server below
        return cluster.url

    async def _start_smsc(self) -> None:
        self.smsc = Smsc.from_settings(self.settings, clock=self.clock, metrics=self.sim_metrics,
                                       max_connections=self.settings.sim_max_connections,
                                       bind_timeout_s=self.settings.sim_bind_timeout_s)
        self.handsets = Handsets(self.smsc)
        host, port = await self.smsc.start(self.settings.sim_host, self.settings.sim_port)
        self._on_stop("smsc", self.smsc.stop)
        self.endpoints["smsc"] = f"smpp://{host}:{port}"
        self.selfcare_link = SelfcareLink(self.settings.sim_selfcare_url, self.settings.api_msisdn_header)
        sim_app = create_sim_app(self.smsc, handsets=self.handsets, service_list=service_list(build_router()),
                                 allowed_hosts=(self.settings.sim_host, urlsplit(self.settings.sim_url).hostname or ""),
                                 selfcare=self.selfcare_link)
        self.post_office = PostOffice(self.clock)
        register_mail_routes(sim_app, self.post_office)
        self.endpoints["simulator"] = await self._serve("simulator", sim_app, self.settings.sim_host,
                                                        self.settings.sim_http_port)
        self.settings = self.settings.with_overrides(smsc_host=host, smsc_port=port)
        smtp_host, smtp_port = await self.post_office.start(
            self.settings.sim_host, self.settings.sim_smtp_port, timeout_s=self.settings.sim_smtp_timeout_s,
            max_connections=self.settings.sim_smtp_max_connections)
        self._on_stop("smtp", self.post_office.stop)
        self.endpoints["smtp"] = f"smtp://{smtp_host}:{smtp_port} (mailboxes: simulator /api/mail)"
        if self.settings.smtp_port == 0:  # the platform mails through the sink in this process
            self.settings = self.settings.with_overrides(smtp_host=smtp_host, smtp_port=smtp_port)

    async def _start_gateway(self) -> None:
        assert self.store is not None, "the gateway needs the store"
        self.gateway = Gateway(self.settings, self.store, build_router(), clock=self.clock, metrics=self.metrics,
                               platform=self.platform)
        if self.platform is not None:  # operations of the API hand their MTs to this gateway at once
            self.platform.send_mt = self.gateway.send
        await self.gateway.start()
        self._on_stop("gateway", self.gateway.stop)
        if self.handsets is not None:  # after "advance time" (our clock) the N2 reviews now due run
            self.handsets.time_hooks["ussd"] = time_hook(self.store, self.settings, self.gateway.send)
        self.endpoints["gateway"] = f"bound to {self.settings.smsc_host}:{self.settings.smsc_port}"

    async def _start_api(self) -> None:
        assert self.store is not None and self.platform is not None, "the self-care API needs the store"
        app = create_http_api(self.platform)
        # /metrics, /health and /ready of the gateway process, beside the API (gateway/observe.py)
        readiness = observe.Readiness(self.store, self.gateway.clients if self.gateway else None)
        observe.install(app, self.metrics, readiness, self.store)
        base = await self._serve("selfcare", app, self.settings.api_host, self.settings.api_port)
        self.endpoints["selfcare"] = base + "/api/v1"
        if self.selfcare_link is not None and not self.selfcare_link.base_url:  # the web phone's subscriber panel
            self.selfcare_link.base_url = self.endpoints["selfcare"]
        self.endpoints["cabinet"] = base + "/"  # «Личный кабинет»: the web page on the API's server
        self.endpoints["metrics"] = f"{base}/metrics (ready: {base}/ready)"

    async def _serve(self, part: str, app: web.Application, host: str, port: int) -> str:
        s = self.settings
        limits = ConnectionLimits(s.http_max_connections, s.http_idle_timeout_s, s.http_body_timeout_s)
        app[CONNECTION_LIMITS_KEY] = limits
        runner, url, self.gates[part] = await serve(app, host, port, limits, name=part,
                                                    shutdown_timeout=self.http_drain_s,
                                                    refusal=sim_refusal if part == "simulator" else api_refusal)
        self._on_stop(f"{part}_http", runner.cleanup)
        bound = runner.addresses[-1]
        log.info("http_listening", part=part, url=url, port=bound[1])  # the port taken when asked for 0
        return url


def service_list(router: Router) -> dict[str, list[dict[str, str]]]:
    """What the web phone offers as shortcuts: every SMS route and USSD string the platform serves."""
    sms = [{"to": r.short_code, "keyword": _keyword(r.description), "description": r.description}
           for r in router.sms_routes()]
    ussd = [{"code": f"*{r.service_code}#", "description": r.description} for r in router.ussd_routes()]
    return {"sms": sms, "ussd": ussd}


def _keyword(description: str) -> str:
    """"ПАРОЛЬ - новый пароль" -> ПАРОЛЬ; "PER или ON - ..." -> PER; "любое SMS - ..." -> "" (any text)."""
    head = description.split(" - ")[0].split(" или ")[0] if " - " in description else ""
    return head if head.isupper() else ""

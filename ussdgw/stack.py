"""The whole platform in one process: Redis (embedded unless REDIS_URL), the SMSC simulator with its
HTTP API, the gateway bound to it. `ussdgw up` runs this; the tests run the same thing on free ports.

This is where the platform's one `Clock` is made (or taken from the caller) and handed to every
part: store, gateway (and so its handlers), self-care API, SMSC simulator and mailboxes. The
simulator's "advance time" moves it for all of them; two stacks never share one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from gateway.mail import SmtpMailer
from gateway.router import Router
from gateway.selfcare_api import create_app as create_selfcare_app
from gateway.service import Gateway
from handlers.number_management import time_hook
from handlers.registry import build_router
from handlers.selfcare import Env
from simulator.handset import Handsets
from simulator.http import create_app as create_sim_app
from simulator.mailbox import PostOffice
from simulator.mailbox import register_routes as register_mail_routes
from simulator.phones import PhoneBook
from simulator.smsc import Smsc
from ussdgw.clock import Clock
from ussdgw.config import Settings
from ussdgw.redis_server import EmbeddedRedis
from ussdgw.store import Store

log = structlog.get_logger("ussdgw.stack")


@dataclass
class Stack:
    settings: Settings
    clock: Clock = field(default_factory=Clock)  # the one clock every part below reads
    redis: EmbeddedRedis | None = None
    store: Store | None = None
    smsc: Smsc | None = None
    handsets: Handsets | None = None
    gateway: Gateway | None = None
    post_office: PostOffice | None = None  # the simulator's SMTP sink + mailbox view (issue 3)
    selfcare: Env | None = None  # what the self-care API runs on (issue 3)
    runners: list[web.AppRunner] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)

    async def start_redis(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        self.redis = EmbeddedRedis(f"{self.settings.state_dir}/redis")
        # Started from the loop's own thread on purpose: the server is tied to its parent thread's life.
        self.redis.start()
        return self.redis.url

    async def start(self, *, smsc: bool = True, gateway: bool = True, api: bool | None = None) -> Stack:
        url = await self.start_redis()
        self.endpoints["redis"] = url
        self.store = Store.from_url(url, self.settings.secret_key_bytes(), lease_s=self.settings.mt_lease_s,
                                    clock=self.clock)
        if smsc:
            self.smsc = Smsc(dict(self.settings.sim_accounts), PhoneBook(clock=self.clock), window=self.settings.window,
                             validity_s=self.settings.sim_validity_s)
            self.handsets = Handsets(self.smsc)
            host, port = await self.smsc.start(self.settings.sim_host, self.settings.sim_port)
            self.endpoints["smsc"] = f"smpp://{host}:{port}"
            sim_app = create_sim_app(self.smsc, handsets=self.handsets, service_list=service_list(build_router()))
            self.post_office = PostOffice(self.clock)
            register_mail_routes(sim_app, self.post_office)
            self.endpoints["simulator"] = await self._serve(sim_app, self.settings.sim_host,
                                                            self.settings.sim_http_port)
            self.settings = self.settings.with_overrides(smsc_host=host, smsc_port=port)
            smtp_host, smtp_port = await self.post_office.start(self.settings.sim_host, self.settings.sim_smtp_port)
            self.endpoints["smtp"] = f"smtp://{smtp_host}:{smtp_port} (mailboxes: simulator /api/mail)"
            if self.settings.smtp_port == 0:  # the platform mails through the sink in this process
                self.settings = self.settings.with_overrides(smtp_host=smtp_host, smtp_port=smtp_port)
        if gateway:
            self.gateway = Gateway(self.settings, self.store, build_router(), clock=self.clock)
            await self.gateway.start()
            if self.handsets is not None:  # USSD (issue 4): after "advance time" (our clock), N2 reviews run
                self.handsets.time_hooks["ussd"] = time_hook(self.store, self.settings, self.gateway.send)
            self.endpoints["gateway"] = f"bound to {self.settings.smsc_host}:{self.settings.smsc_port}"
        if api if api is not None else gateway:
            self.selfcare = Env(self.store, self.settings, send_mt=self.gateway.send if self.gateway else None,
                                mailer=SmtpMailer(self.settings), clock=self.clock)
            self.endpoints["selfcare"] = await self._serve(create_selfcare_app(self.selfcare), self.settings.api_host,
                                                           self.settings.api_port) + "/api/v1"
        return self

    async def _serve(self, app: web.Application, host: str, port: int) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self.runners.append(runner)
        bound = runner.addresses[-1]
        return f"http://{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        for runner in reversed(self.runners):
            await runner.cleanup()
        if self.smsc is not None:
            await self.smsc.stop()
        if self.post_office is not None:
            await self.post_office.stop()
        if self.store is not None:
            await self.store.close()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)


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

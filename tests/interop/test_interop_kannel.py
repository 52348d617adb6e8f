"""The SMSC simulator serving Kannel (Debian's `kannel`: bearerbox + smsbox, a widely used SMS
gateway this project did not write), over loopback TCP: Kannel binds as a transceiver ESME, an MT
sent through Kannel's sendsms HTTP interface reaches the phone and its delivery receipt comes back
to Kannel's dlr-url, and an MO from the phone reaches the service URL Kannel calls."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from simulator.smsc import Smsc

PHONE = "79161234567"

pytestmark = pytest.mark.needs_tool(
    shutil.which("bearerbox") is None or shutil.which("smsbox") is None,
    reason="needs Debian's kannel (bearerbox, smsbox): ./dev test installs it when run as root",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Callbacks:
    """The HTTP side Kannel talks to: its MO service URL and its delivery-report URL."""

    def __init__(self) -> None:
        self.mo: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.dlr: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/mo", self._mo)
        app.router.add_get("/dlr", self._dlr)
        return app

    async def _mo(self, request: web.Request) -> web.Response:
        self.mo.put_nowait(dict(request.query))
        return web.Response(text="")

    async def _dlr(self, request: web.Request) -> web.Response:
        self.dlr.put_nowait(dict(request.query))
        return web.Response(text="")


def kannel_conf(smsc_port: int, http_port: int, ports: dict[str, int], logs: Path) -> str:
    return f"""
group = core
admin-port = {ports["admin"]}
admin-password = admin
smsbox-port = {ports["smsbox"]}
box-allow-ip = 127.0.0.1
log-file = "{logs}/bearerbox.log"
log-level = 0
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = simulator
host = 127.0.0.1
port = {smsc_port}
transceiver-mode = true
smsc-username = kannel
smsc-password = secret
system-type = ""
enquire-link-interval = 5
msg-id-type = 0x03
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports["smsbox"]}
sendsms-port = {ports["sendsms"]}
log-file = "{logs}/smsbox.log"
log-level = 0

group = sendsms-user
username = tester
password = secret
max-messages = 3
concatenation = true

group = sms-service
keyword = default
catch-all = true
max-messages = 0
get-url = "http://127.0.0.1:{http_port}/mo?from=%p&to=%P&text=%a"
"""


@contextlib.asynccontextmanager
async def kannel_box(box: str, conf: Path, logs: Path) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        box, str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=(logs / f"{box}.stderr").open("wb"),
    )
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def sendsms(port: int, params: dict[str, str]) -> str:
    """Kannel's sendsms HTTP interface, retried until smsbox is up."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/cgi-bin/sendsms", params=params) as resp:
                    body = await resp.text()
                    if resp.status in (200, 202):
                        return body
                    raise AssertionError(f"sendsms answered {resp.status}: {body}")
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.2)  # smsbox is still starting: nothing to await on but its port


async def test_kannel_binds_to_the_simulator_and_sms_flow_both_ways_with_delivery_reports(tmp_path: Path) -> None:
    smsc = Smsc({"kannel": "secret"}, enquire_link_s=0)
    await smsc.start("127.0.0.1", 0)
    callbacks = Callbacks()
    runner = web.AppRunner(callbacks.app(), access_log=None)
    await runner.setup()
    http_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    ports = {"admin": free_port(), "smsbox": free_port(), "sendsms": free_port()}
    conf = tmp_path / "kannel.conf"
    conf.write_text(kannel_conf(smsc.port, http_port, ports, tmp_path))
    try:
        async with contextlib.AsyncExitStack() as boxes:
            await boxes.enter_async_context(kannel_box("bearerbox", conf, tmp_path))
            async with asyncio.timeout(20):
                while not any(c.session.is_bound for c in smsc.connections):
                    smsc._bound_changed.clear()
                    await smsc._bound_changed.wait()
            [conn] = [c for c in smsc.connections if c.session.is_bound]
            assert conn.session.system_id == "kannel" and conn.session.bind_mode is not None
            # bearerbox is up (it bound): now smsbox, which does not retry its connection to bearerbox
            await boxes.enter_async_context(kannel_box("smsbox", conf, tmp_path))

            after = smsc.phones.last_seq
            body = await sendsms(ports["sendsms"], {
                "username": "tester", "password": "secret", "from": "3339", "to": PHONE, "text": "Hello from Kannel",
                "dlr-mask": "3", "dlr-url": f"http://127.0.0.1:{http_port}/dlr?type=%d&id=%F",
            })
            assert "Accepted" in body or "Sent" in body, body
            [delivered] = await smsc.phones.wait_inbox(PHONE, after, 20)
            assert delivered.text == "Hello from Kannel"
            async with asyncio.timeout(20):
                report = await callbacks.dlr.get()
                while report["type"] != "1":  # 1: delivered to the phone (8 is "accepted by the SMSC")
                    report = await callbacks.dlr.get()
            # msg-id-type 0x03: Kannel reads our hex message ids as numbers and reports them in decimal
            assert [mid for mid in smsc.mt_records if int(mid, 16) == int(report["id"])], report

            [mo] = smsc.submit_mo(PHONE, "3339", "BALANCE please")
            await asyncio.wait_for(mo.delivered.wait(), 20)
            got = await asyncio.wait_for(callbacks.mo.get(), 20)
            assert (got["from"].lstrip("+"), got["to"], got["text"]) == (PHONE, "3339", "BALANCE please")
    finally:
        await runner.cleanup()
        await smsc.stop()

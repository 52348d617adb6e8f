"""The platform's self-care HTTP API, read as the mobile network reads it, for the web phone's
panel with the subscriber's state (balance, tariff, services, N2, block).

The simulator is the operator's network: it signs in with the MSISDN header (SPEC P6, header
enrichment; the platform must list the simulator's address in `api_trusted_networks`) and keeps
one session per phone while the platform accepts it. Only HTTP: the simulator imports nothing of
the platform (its layers stay apart).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ussdgw.logs import get_logger

log = get_logger("ussdgw.simulator.selfcare")

TIMEOUT_S = 5.0


class SelfcareRefused(Exception):
    """The self-care API said no (or could not be reached): `text` is what the panel shows."""

    def __init__(self, text: str, status: int = 502) -> None:
        super().__init__(text)
        self.text, self.status = text, status


class SelfcareLink:
    def __init__(self, base_url: str = "", msisdn_header: str = "X-MSISDN") -> None:
        self.base_url = base_url.rstrip("/")
        self.msisdn_header = msisdn_header
        self._tokens: dict[str, str] = {}
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._http

    async def _call(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            async with self._session().request(method, self.base_url + path, headers=headers,
                                                    json={} if method == "POST" else None) as response:
                body = await response.json(content_type=None)
                return response.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("selfcare_unreachable", error=type(exc).__name__)
            raise SelfcareRefused("Нет связи с API личного кабинета платформы.") from None

    async def _sign_in(self, msisdn: str) -> str:
        status, body = await self._call("POST", "/sessions/network", {self.msisdn_header: msisdn})
        token = body.get("data", {}).get("token") if status < 300 else None
        if not isinstance(token, str):
            raise SelfcareRefused(str(body.get("message") or f"Вход в личный кабинет отклонён (HTTP {status})."),
                                  status if 400 <= status < 500 else 502)
        self._tokens[msisdn] = token
        return token

    async def account(self, msisdn: str) -> dict[str, Any]:
        """The subscriber's account as the cabinet shows it; a session that ended is opened again once."""
        for attempt in range(2):
            token = self._tokens.get(msisdn) or await self._sign_in(msisdn)
            status, body = await self._call("GET", f"/accounts/{msisdn}", {"Authorization": f"Bearer {token}"})
            if status == 401 and attempt == 0:
                self._tokens.pop(msisdn, None)
                continue
            if status >= 300:
                raise SelfcareRefused(str(body.get("message") or f"API личного кабинета: HTTP {status}."),
                                      status if 400 <= status < 500 else 502)
            return body
        raise SelfcareRefused("Вход в личный кабинет не удержался.")  # pragma: no cover - the loop returns or raises

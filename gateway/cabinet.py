"""The self-care cabinet («Личный кабинет») as a web page, served at `/` by the self-care API's HTTP
server. The page is plain HTML, CSS and JS in `gateway/cabinet_web/` (no build step, nothing from a
CDN) and talks only to the JSON API under `/api/v1`, like any other client.

- `GET /` is the page: `Cache-Control: no-cache` (revalidated by its ETag every time), with its
  assets named by their content hash (`/static/cabinet.js?v=<hash>`).
- `GET /static/<name>` is one of those assets; with the current hash it is cached for a year
  (`immutable`: a change makes a new URL), without it `no-cache`.
- Every answer carries a strict Content-Security-Policy (scripts, styles, images and requests from
  this origin only; no inline code, no frames), `nosniff` and `no-referrer`.

The files are read again when one of them changes on disk, so an edited page shows on reload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ussdgw.web import BROWSER_DIR, BROWSER_SCRIPTS

WEB_DIR = Path(__file__).parent / "cabinet_web"
PAGE = "index.html"
ASSETS = {"cabinet.css": "text/css; charset=utf-8", "cabinet.js": "text/javascript; charset=utf-8",
          "icon.svg": "image/svg+xml", **dict.fromkeys(BROWSER_SCRIPTS, "text/javascript; charset=utf-8")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class File:
    body: bytes
    content_type: str
    version: str  # a hash of the body: the ETag, and the `v` of an asset's URL

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


class Cabinet:
    """The page and its assets, read from `web_dir`, kept until a file changes on disk."""

    def __init__(self, web_dir: Path = WEB_DIR) -> None:
        self.web_dir = web_dir
        self._stamp: tuple[int, ...] = ()
        self._files: dict[str, File] = {}

    def path(self, name: str) -> Path:
        """Where a file is: the page's own folder, or the core's for the scripts both pages share."""
        return BROWSER_DIR / name if name in BROWSER_SCRIPTS else self.web_dir / name

    def files(self) -> dict[str, File]:
        names = [PAGE, *ASSETS]
        stamp = tuple(self.path(name).stat().st_mtime_ns for name in names)
        if stamp != self._stamp:
            self._files, self._stamp = self._load(), stamp
        return self._files

    def _load(self) -> dict[str, File]:
        files: dict[str, File] = {}
        page = (self.web_dir / PAGE).read_text(encoding="utf-8")
        for name, content_type in ASSETS.items():
            body = self.path(name).read_bytes()
            files[name] = File(body, content_type, _version(body))
            page = page.replace(f'"/static/{name}"', f'"/static/{name}?v={files[name].version}"')
        body = page.encode()
        files[PAGE] = File(body, "text/html; charset=utf-8", _version(body))
        return files


CABINET_KEY = web.AppKey("cabinet", Cabinet)


def _answer(request: web.Request, file: File, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": file.etag}
    if file.etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = file.content_type
    return web.Response(body=file.body, headers=headers)


async def page(request: web.Request) -> web.Response:
    return _answer(request, request.app[CABINET_KEY].files()[PAGE], "no-cache")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    file = request.app[CABINET_KEY].files()[name]
    return _answer(request, file, IMMUTABLE if request.query.get("v") == file.version else "no-cache")


def register_routes(app: web.Application, web_dir: Path = WEB_DIR) -> None:
    """`/` and `/static/<name>` on the self-care API's application."""
    app[CABINET_KEY] = Cabinet(web_dir)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)

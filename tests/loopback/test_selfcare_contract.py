"""The OpenAPI document is valid 3.1 and names every API route the self-care app serves, no more, no
less; besides them it serves only the cabinet page."""

from __future__ import annotations

import yaml
from openapi_spec_validator import validate

from gateway.http_api import API, create_app
from handlers.ports import Platform
from tests.support.platform import StoreFactory
from tests.support.selfcare_helpers import SPEC_PATH
from ussdgw.config import Settings


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    document = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    validate(document)
    assert document["openapi"].startswith("3.1")


async def test_every_served_route_and_method_is_documented_and_nothing_else(settings: Settings,
                                                                           store_factory: StoreFactory) -> None:
    store = store_factory("redis://127.0.0.1:1")  # never connected
    async with Platform(store, settings) as platform:
        app = create_app(platform, admin_token="t", recovery=False)
        routes = [(r.method.lower(), r.resource.canonical) for r in app.router.routes()
                  if r.resource is not None and r.method != "HEAD"]
    served = {(method, path.removeprefix(API)) for method, path in routes if path.startswith(f"{API}/")}
    assert {route for route in routes if not route[1].startswith(f"{API}/")} == {  # the cabinet page
        ("get", "/"), ("get", "/static/{name}")}
    document = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    documented = {(method, path) for path, item in document["paths"].items() for method in item
                  if method in {"get", "put", "post", "delete", "patch"}}
    assert served == documented

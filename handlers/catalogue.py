"""M3/M4: the catalogue of tariffs and services (names, descriptions, prices in kopecks).

The data lives in `catalogue.yaml` beside this module, so product people edit prices without
touching code. Loaded once, validated on load: a broken file fails at start, not on a request.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from ussdgw import russian


class CatalogueError(ValueError):
    """The catalogue file is malformed."""


@dataclass(frozen=True, slots=True)
class Tariff:
    id: str
    name: str
    description: str
    monthly_fee_kop: int
    switch_price_kop: int
    corporate_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description,
                "monthly_fee_kop": self.monthly_fee_kop, "switch_price_kop": self.switch_price_kop,
                "corporate_only": self.corporate_only}


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    name: str
    description: str
    monthly_fee_kop: int
    connect_price_kop: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description,
                "monthly_fee_kop": self.monthly_fee_kop, "connect_price_kop": self.connect_price_kop}


@dataclass(frozen=True, slots=True)
class Catalogue:
    tariffs: tuple[Tariff, ...]
    services: tuple[Service, ...]

    def tariff(self, tariff_id: str) -> Tariff | None:
        return next((t for t in self.tariffs if t.id == tariff_id), None)

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)


def _kop(entry: dict[str, Any], key: str) -> int:
    value = entry.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CatalogueError(f"{entry.get('id')}: {key} must be a non-negative integer (kopecks)")
    return value


def parse_catalogue(data: Any) -> Catalogue:
    if not isinstance(data, dict):
        raise CatalogueError("the catalogue must be a mapping with 'tariffs' and 'services'")
    tariffs, services = [], []
    for entry in data.get("tariffs") or []:
        tariffs.append(Tariff(str(entry["id"]), str(entry["name"]), str(entry["description"]),
                              _kop(entry, "monthly_fee_kop"), _kop(entry, "switch_price_kop"),
                              bool(entry.get("corporate_only", False))))
    for entry in data.get("services") or []:
        services.append(Service(str(entry["id"]), str(entry["name"]), str(entry["description"]),
                                _kop(entry, "monthly_fee_kop"), _kop(entry, "connect_price_kop")))
    ids = [t.id for t in tariffs] + [s.id for s in services]
    if len(ids) != len(set(ids)):
        raise CatalogueError("tariff and service ids must be unique")
    if not tariffs:
        raise CatalogueError("the catalogue needs at least one tariff")
    return Catalogue(tuple(tariffs), tuple(services))


@functools.cache
def catalogue() -> Catalogue:
    """The packaged catalogue (read once)."""
    text = resources.files("handlers").joinpath("catalogue.yaml").read_text(encoding="utf-8")
    return parse_catalogue(yaml.safe_load(text))


def rub(kop: int) -> str:
    """12345 -> '123,45 ₽'; whole roubles without kopecks: 34000 -> '340 ₽' (non-breaking spaces)."""
    return russian.money(kop)

"""The layers point one way: the SMPP core (`ussdgw.smpp`) does no I/O and knows nothing above it;
the link (`ussdgw.link`) knows the core and nothing of the gateway or the simulator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "ussdgw/smpp": ("asyncio", "socket", "time", "ussdgw.link", "ussdgw.store", "gateway", "handlers", "simulator"),
    "ussdgw/link": ("ussdgw.store", "gateway", "handlers", "simulator"),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("package", "path"), [
    (package, path) for package in FORBIDDEN for path in sorted((ROOT / package).glob("*.py"))
], ids=lambda value: value.name if isinstance(value, Path) else value)
def test_a_layer_imports_nothing_it_must_not(package: str, path: Path) -> None:
    bad = {name for name in imported(path) for banned in FORBIDDEN[package]
           if name == banned or name.startswith(banned + ".")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"

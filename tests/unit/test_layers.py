"""The layers point one way, checked by import-linter's contracts in setup.cfg: here the real tree
keeps them, and a copy of it with one deliberate wrong-way import breaks the contract that forbids it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ussdgw", "gateway", "handlers", "ussd_menus", "sms_codes", "simulator")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "setup.cfg")], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "web"))
    shutil.copy(ROOT / "setup.cfg", root / "setup.cfg")
    return root


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "wrong_import", "contract"), [
    ("ussdgw/smpp/pdu.py", "import gateway.service", "The core (ussdgw) imports no application package"),
    ("ussdgw/smpp/session.py", "import asyncio", "The SMPP core is sans-I/O"),
    ("ussdgw/smpp/codec.py", "import time", "The SMPP core is sans-I/O"),
    ("ussdgw/clock.py", "import ussdgw.app.stack", "The core (ussdgw) imports no application package"),
    ("handlers/base.py", "import gateway.esme", "Application layers point one way"),
    ("sms_codes/codes.py", "import handlers.base", "Application layers point one way"),
    ("simulator/phones.py", "import ussdgw.store", "The simulator reaches the platform only over SMPP and HTTP"),
    ("simulator/smsc.py", "import gateway.service", "Application layers point one way"),
    ("gateway/service.py", "import ussdgw.app.stack", "Only the composition root knows every part"),
], ids=lambda value: value if "/" in value else None)
def test_a_wrong_way_import_breaks_its_contract(tree_copy: Path, module: str, wrong_import: str,
                                                contract: str) -> None:
    path = tree_copy / module
    original = path.read_text()
    path.write_text(original + f"\n{wrong_import}  # deliberately wrong\n")
    try:
        result = lint_imports(tree_copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout


def test_every_core_module_is_under_the_core_contract() -> None:
    """A new module in ussdgw/ must be named in the contract, or nothing would check it."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    named = set(config["importlinter:contract:core"]["source_modules"].split())
    core = {f"ussdgw.{p.stem if p.is_file() else p.name}" for p in (ROOT / "ussdgw").iterdir()
            if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").exists()}
    assert core - {"ussdgw.app"} <= named, sorted(core - {"ussdgw.app"} - named)

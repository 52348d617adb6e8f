"""The package as an operator installs it: a wheel built from this tree, installed into a fresh
virtualenv, runs `ussdgw up` with everything it needs (web phone, menus, catalogue, OpenAPI, Lua).

Offline: the wheel is built without build isolation (setuptools and `build` come from the test
extras) and installed with --no-deps; its dependencies are this environment's, reached through a
.pth path entry (a bare path: this environment's own .pth files, an editable ussdgw among them,
are not run, so `import ussdgw` can only find the wheel's copy).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
PACKAGES = ("ussdgw", "gateway", "handlers", "ussd_menus", "sms_codes", "simulator")
DATA_SUFFIXES = {".yaml", ".json", ".html", ".js", ".css", ".svg", ".lua", ".typed"}
STARTUP_S = 30.0

pytestmark = pytest.mark.timeout(120)  # typically ~15 s: build, venv with pip, install, start, stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=90, **kwargs)
    assert result.returncode == 0, f"$ {' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def source_data_files() -> set[str]:
    """Every data file in the packages' folders, as the wheel must name it."""
    return {path.relative_to(ROOT).as_posix() for package in PACKAGES for path in (ROOT / package).rglob("*")
            if path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of this tree (the build writes build/ and *.egg-info next to it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "node_modules")
    src.mkdir()
    for name in (*PACKAGES, "setup.cfg", "pyproject.toml", "README.md"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    built = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", src)
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr, built.stderr
    [path] = (tmp / "dist").glob("ussdgw-*.whl")
    return path


def test_the_wheel_ships_every_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = source_data_files()
    assert {"simulator/web/index.html", "simulator/web/phone.js", "simulator/web/phone.css",
            "ussd_menus/selfcare.yaml", "handlers/catalogue.yaml", "gateway/openapi.yaml",
            "gateway/cabinet_web/index.html", "ussdgw/browser/dom.js", "ussdgw/py.typed"} <= expected
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "bench/"))]


def test_the_installed_package_runs_up_and_serves_the_web_phone(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    site = Path(run(bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    (site / "_ussdgw_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
        "-q", wheel)

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("USSDGW_") and k not in ("REDIS_URL", "PYTHONPATH", "VIRTUAL_ENV")}
    where = run(bin_dir / "python", "-c", "import ussdgw, simulator.http as h; print(ussdgw.__file__, h.WEB_DIR)",
                cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), f"not the wheel's copy: {where}"
    assert run(bin_dir / "ussdgw", "--version", cwd=tmp_path, env=env).stdout.strip() == "ussdgw 0.1.0"

    http_port = free_port()
    env.update(USSDGW_SIM_HTTP_PORT=str(http_port), USSDGW_API_PORT=str(free_port()),
               USSDGW_SIM_PORT=str(free_port()), USSDGW_STATE_DIR=str(tmp_path / "state"), USSDGW_LOG_FORMAT="json")
    up = subprocess.Popen([bin_dir / "ussdgw", "up"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:  # the web phone answers once `up` has started its simulator
            assert up.poll() is None, up.communicate(timeout=5)
            try:
                status, page = get(f"http://127.0.0.1:{http_port}/")
                break
            except OSError:
                assert time.monotonic() < deadline, f"the web phone did not answer within {STARTUP_S:g} s"
                time.sleep(0.1)
        assert status == 200 and "<title>ussdgw · виртуальный телефон</title>" in page
        assert get(f"http://127.0.0.1:{http_port}/static/phone.js")[0] == 200
        assert get(f"http://127.0.0.1:{http_port}/static/dom.js")[0] == 200  # the core's, shared with the cabinet
        up.send_signal(signal.SIGINT)
        out, err = up.communicate(timeout=20)
        assert up.returncode == 0, err
        assert "ussdgw is up" in out and "Traceback" not in err
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()

"""The test suite's own rerun report (`tests/support/reruns.py`), in a real pytest process: a test that
fails and then passes on its rerun still shows why it failed, with what it printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
from tests.support.reruns import FailedAttempts

def pytest_configure(config):
    config.pluginmanager.register(FailedAttempts(), "failed-attempts")
"""

TESTS = """
import pytest
from pathlib import Path

TRIES = Path(__file__).with_name("tries")

@pytest.fixture
def noisy():
    print("setting up the peer")
    yield
    print("the peer said: receipt recorded late")

def test_flaky(noisy):
    tries = int(TRIES.read_text()) if TRIES.exists() else 0
    TRIES.write_text(str(tries + 1))
    print(f"attempt {tries + 1} calling")
    assert tries > 0, "the receipt is not in the trail yet"

def test_steady():
    print("steady output")

def test_always_broken():
    print("broken output")
    assert False, "broken every time"
"""


def run_pytest(folder: Path, *options: str) -> str:
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_probe.py").write_text(TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--reruns", "1", "-c", "/dev/null",
         "--rootdir", str(folder), *options, str(folder)],
        capture_output=True, text=True, timeout=50, cwd=folder, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert done.returncode == 1, done.stdout + done.stderr  # test_always_broken fails
    return done.stdout


def attempts_section(out: str) -> str:
    assert "failed attempts of the tests that ran again" in out, out
    return out.split("failed attempts of the tests that ran again", 1)[1].split("short test summary info", 1)[0]


def test_a_test_that_passed_on_its_rerun_still_shows_its_failure_and_output(tmp_path: Path) -> None:
    section = attempts_section(run_pytest(tmp_path))
    flaky = section.split("test_probe.py::test_flaky (attempt 1)", 1)[1].split("test_probe.py::", 1)[0]
    assert "the receipt is not in the trail yet" in flaky
    assert "setting up the peer" in flaky and "attempt 1 calling" in flaky
    assert "the peer said: receipt recorded late" in flaky  # the teardown's output too
    assert "attempt 2 calling" not in flaky  # only that attempt's own output


def test_tests_that_ran_once_are_left_out_and_a_final_failure_keeps_its_own_report(tmp_path: Path) -> None:
    out = run_pytest(tmp_path)
    section = attempts_section(out)
    assert "test_steady" not in section and "steady output" not in section
    assert "test_always_broken (attempt 1)" in section and "test_always_broken (attempt 2)" not in section
    assert "FAILED test_probe.py::test_always_broken" in out  # the last attempt: pytest's own report


def test_show_capture_no_keeps_the_traceback_and_drops_the_output(tmp_path: Path) -> None:
    section = attempts_section(run_pytest(tmp_path, "--show-capture=no"))
    assert "the receipt is not in the trail yet" in section
    assert "attempt 1 calling" not in section and "Captured" not in section

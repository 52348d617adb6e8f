"""The failed attempts of tests that ran again (pytest-rerunfailures), printed at the end of the run.

A flake that passes on its rerun leaves only an `R` in the summary: its traceback and everything it
logged are dropped with the failed attempt, so the cause is never seen. This plugin keeps each
failed attempt's report and prints, after the run, its traceback and the output captured in its
setup, call and teardown (`--show-capture` chooses which streams, as for failures)."""

from __future__ import annotations

import pytest


class FailedAttempts:
    """Every attempt that ended in a rerun: its failed phase's report, then that attempt's teardown
    report (whose sections hold the output of all three phases)."""

    def __init__(self) -> None:
        self._attempts: dict[tuple[str, int], list[pytest.TestReport]] = {}
        self._first_section: dict[tuple[str, int], int] = {}  # the sections before this attempt's own
        self._sections_seen: dict[str, int] = {}  # an item's sections pile up over its attempts

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        key = (report.nodeid, int(getattr(report, "rerun", 0)))
        if report.outcome == "rerun":  # type: ignore[comparison-overlap]  # the plugin's own outcome
            self._attempts.setdefault(key, []).append(report)
            self._first_section.setdefault(key, self._sections_seen.get(report.nodeid, 0))
        elif report.when == "teardown" and key in self._attempts:
            self._attempts[key].append(report)
        if report.when == "teardown":
            self._sections_seen[report.nodeid] = len(report.sections)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self._attempts:
            return
        out = terminalreporter
        showcapture = out.config.option.showcapture
        out.write_sep("=", "failed attempts of the tests that ran again", yellow=True, bold=True)
        for (nodeid, attempt), reports in self._attempts.items():
            out.write_sep("_", f"{nodeid} (attempt {attempt + 1})")
            for report in reports:
                if report.outcome == "rerun":  # type: ignore[comparison-overlap]
                    out.write_line(str(report.longrepr))
            if showcapture == "no":
                continue
            for title, content in reports[-1].sections[self._first_section[(nodeid, attempt)]:]:
                if showcapture == "all" or showcapture in title:
                    out.write_sep("-", title)
                    out.write_line(content.rstrip("\n"))

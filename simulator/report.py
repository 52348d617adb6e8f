"""`ussdgw load --report FILE.html`: one self-contained HTML file with the run's figures next to two
plots, throughput over time and the latency distribution.

The plots are drawn with matplotlib (the `report` extra) through its object API (`Figure`, no
pyplot: no global state, no display) and embedded as inline SVG, text kept as text, so the file
opens anywhere, offline, and stays small. Nothing else is needed to read it: no script, no CDN.
"""

from __future__ import annotations

import html
import io
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.load import LoadError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIND_COLOURS = {"sms": "#1f77b4", "ussd": "#ff7f0e", "all": "#2ca02c"}
PERCENTILES = (50.0, 90.0, 99.0)


def require_plotting() -> None:
    """Fail early, with the fix, when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LoadError("--report needs matplotlib: pip install 'ussdgw[report]' (or matplotlib)") from None


def write_report(path: Path, result: dict[str, Any], latencies: dict[str, list[float]]) -> None:
    """The report of one run (`LoadGenerator.result` and `.latencies`) as HTML at `path`."""
    require_plotting()
    path.write_text(render(result, latencies), encoding="utf-8")


def render(result: dict[str, Any], latencies: dict[str, list[float]]) -> str:
    throughput = _svg(throughput_figure(result))
    distribution = _svg(latency_figure(result, latencies))
    kinds = [k for k in ("sms", "ussd", "all") if k in result]
    rows = "\n".join(_row(kind, result[kind]) for kind in kinds)
    title = (f"{result['phones']} phones · target {result['target_rate']:g}/s · offered "
             f"{result['offered_per_s']:g}/s for {result['seconds']:g} s")
    note = (f"<p class=warn>{result['not_offered']} requests not offered: every phone was waiting for a reply "
            f"(add --phones).</p>" if result.get("not_offered") else "")
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<title>ussdgw load report: {html.escape(title)}</title>
<style>
  body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
  h1 {{ font-size: 1.5em; margin-bottom: 0.2em; }}
  .sub {{ color: #666; margin-top: 0; }}
  table {{ border-collapse: collapse; margin: 1em 0 2em; }}
  th, td {{ padding: 0.35em 0.9em; border-bottom: 1px solid #ddd; text-align: right; }}
  th:first-child, td:first-child {{ text-align: left; }}
  tr.all td {{ font-weight: 600; }}
  figure {{ margin: 0 0 2em; }}
  figure svg {{ width: 100%; height: auto; }}
  figcaption {{ color: #555; font-size: 0.92em; }}
  .warn {{ color: #a15c00; }}
</style>
</head>
<body>
<h1>Load report</h1>
<p class=sub>{html.escape(title)} · made {made} with <code>ussdgw load</code></p>
<table id=figures>
<thead><tr><th>kind</th><th>offered</th><th>completed</th><th>lost</th><th>per s</th><th>p50 ms</th>
<th>p90 ms</th><th>p99 ms</th><th>max ms</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{note}
<figure id=throughput>
{throughput}
<figcaption>Throughput over time: requests offered and replies received in each second of the run
(the dashed line is the target rate). Latency is from the MO entering the SMSC to the reply reaching
the phone; a request without a reply within 10 s is lost.</figcaption>
</figure>
<figure id=latency>
{distribution}
<figcaption>Latency distribution: how many requests took how long (left, logarithmic buckets), and the
latency at each percentile (right; dotted lines: p50, p90, p99).</figcaption>
</figure>
</body>
</html>
"""


def _row(kind: str, s: dict[str, Any]) -> str:
    cells = [kind, s["offered"], s["completed"], s["lost"], f"{s['per_s']:g}", f"{s['p50_ms']:g}",
             f"{s['p90_ms']:g}", f"{s['p99_ms']:g}", "" if s["max_ms"] is None else f"{s['max_ms']:g}"]
    tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
    return f'<tr class="{html.escape(kind)}">{tds}</tr>'


def throughput_figure(result: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    timeline = result["timeline"]
    offered, completed = timeline["offered_per_s"], timeline["completed_per_s"]
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    axes = figure.add_subplot()
    seconds = list(range(len(offered)))
    axes.step(seconds, offered, where="post", label="offered", color="#999999")
    axes.step(seconds, completed, where="post", label="completed", color=KIND_COLOURS["all"], linewidth=2)
    axes.axhline(result["target_rate"], linestyle="--", color="#d62728", linewidth=1, label="target rate")
    axes.set_xlabel("second of the run")
    axes.set_ylabel("requests per second")
    axes.set_ylim(bottom=0)
    axes.set_xlim(0, max(1, len(seconds) - 1))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return figure


def latency_figure(result: dict[str, Any], latencies: dict[str, list[float]]) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 3.8), layout="constrained")
    histogram, curve = figure.subplots(1, 2)
    samples = {kind: np.asarray(values) * 1000 for kind, values in latencies.items() if values}
    everything = np.concatenate(list(samples.values())) if samples else np.asarray([1.0])
    low, high = max(float(everything.min()), 0.01), max(float(everything.max()), 0.02)
    bins = np.logspace(math.log10(low), math.log10(high * 1.01), 40)
    for kind, values in samples.items():
        histogram.hist(values, bins=bins, histtype="step", linewidth=1.5, label=kind,
                       color=KIND_COLOURS.get(kind, "#333333"))
    histogram.set_xscale("log")
    histogram.set_xlabel("latency, ms")
    histogram.set_ylabel("requests")
    histogram.grid(alpha=0.3)
    points = np.linspace(0, 100, 401)
    for kind, values in samples.items():
        curve.plot(points, np.percentile(values, points), label=kind, color=KIND_COLOURS.get(kind, "#333333"))
    for q in PERCENTILES:
        curve.axvline(q, linestyle=":", color="#777777", linewidth=1)
    p99 = result["all"]["p99_ms"]
    if isinstance(p99, float) and not math.isnan(p99):
        curve.annotate(f"p99 {p99:g} ms", xy=(99, p99), xytext=(60, p99), arrowprops={"arrowstyle": "->"})
    curve.set_yscale("log")
    curve.set_xlabel("percentile")
    curve.set_ylabel("latency, ms")
    curve.grid(alpha=0.3)
    if samples:
        histogram.legend()
        curve.legend(loc="upper left")
    return figure


def _svg(figure: Figure) -> str:
    """The figure as an inline <svg> element (text as text: small, sharp, searchable)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]

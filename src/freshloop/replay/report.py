"""The replay report: one self-contained HTML file with charts (inline SVG) and the summary table."""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

from ..clock import human_duration
from ..data.times import unit_seconds

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# the charts' words as SVG text, not glyph outlines: smaller files, and a page that can be searched and read
plt.rcParams["svg.fonttype"] = "none"

__all__ = ["failure_lines", "summary_rows", "write_report"]



def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _calendar(results: dict[str, dict[str, Any]]) -> bool:
    """Whether the replay's times are calendar times: epoch times (more than three years from 1970) in a unit
    finer than a day, as ISO dates and datetimes become. Day or hour counts, and row numbers, stay numbers."""
    first = next(iter(results.values()))
    times = [p["t"] for s in results.values() for p in s["series"]]
    return first["time_unit"] in ("ns", "us", "ms", "s") and bool(times) and max(map(abs, times)) > 1e8


def _x(t: float, unit: str, calendar: bool = False) -> Any:
    if calendar:
        return datetime.fromtimestamp(t, tz=UTC)
    return t / unit_seconds(unit)


def _when(t: float, unit: str, calendar: bool) -> str:
    if calendar:
        return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M")
    return f"{t:,.0f} rows" if unit == "rows" else f"t={t / unit_seconds(unit):g}{unit}"


def summary_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per policy for a table people read: durations as "3.2 d", "14 h" or "4,531 rows"."""
    rows = []
    for name, s in results.items():
        unit = s["time_unit"]

        def human(value: float | None, unit: str = unit) -> str:
            return human_duration(None if value is None else value * unit_seconds(unit), rows=unit == "rows")

        rows.append({
            "policy": name, "metric": "failed" if s.get("error") else s["metric"], "retrains": s["retrains"],
            "failed_runs": s["failed_runs"], "promoted": s["promotions"],
            "rejected": s["gate_rejected"], "training_rows": s["training_rows"],
            "training_s": round(s.get("training_seconds", 0.0), 2), "max_staleness": human(s["max_staleness"]),
            "mean_staleness": human(s["mean_staleness"]), "data_to_deploy": human(s["mean_data_to_deploy"]),
        })
    return rows


def failure_lines(summary: dict[str, Any]) -> list[str]:
    """What went wrong in one policy's replay, in words: the error that stopped it, failed training runs."""
    lines = []
    if summary.get("error"):
        lines.append(f"replay stopped {summary['error']}")
    if summary.get("failed_runs"):
        lines.append(f"{summary['failed_runs']} training run(s) failed; the first: {summary.get('first_failure')}")
    return lines


def _metric_chart(results: dict[str, dict[str, Any]], unit: str, calendar: bool, axis: str) -> str:
    """Each policy's prequential metric over time, and a strip of its retrains below."""
    metric = next(iter(results.values()))["metric_name"]
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(11, 5.4), sharex=True,
                                    gridspec_kw={"height_ratios": [3, max(1, len(results)) * 0.35]})
    for i, (name, s) in enumerate(results.items()):
        xs = [_x(p["t"], unit, calendar) for p in s["series"]]
        color = f"C{i}"
        score = "failed" if s.get("error") else ("no score" if s["metric"] is None else f"{s['metric']:.4f}")
        ax.plot(xs, [p["metric"] for p in s["series"]], label=f"{name} ({score})", color=color, lw=1.4)
        marks = [_x(t, unit, calendar) for t in s["retrain_times"]]
        strip.plot(marks, [i] * len(marks), "|", color=color, ms=9)
    ax.set_ylabel(f"{metric} (prequential, per window)")
    ax.set_title(f"{metric} of the served model over time")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    strip.set_yticks(range(len(results)), list(results), fontsize=7)
    strip.set_ylim(-0.7, len(results) - 0.3)
    strip.invert_yaxis()
    strip.set_title("retrains", fontsize=8, loc="left")
    strip.set_xlabel(axis)
    return _svg(fig)


def _drift_chart(results: dict[str, dict[str, Any]], unit: str, calendar: bool, axis: str) -> str:
    """Per-feature drift of the first policy that recorded any; empty when none did."""
    drift_owner = next((n for n, s in results.items() if s["drift"]["values"]), None)
    if not drift_owner:
        return ""
    d = results[drift_owner]["drift"]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    names = sorted({k for v in d["values"] for k in v})
    xs = [_x(t, unit, calendar) for t in d["t"]]
    for j, f in enumerate(names):
        ax.plot(xs, [v.get(f) for v in d["values"]], label=f, lw=1.1, color=f"C{j % 10}")
    ax.axhline(0.2, color="k", ls="--", lw=0.8, label="PSI 0.2")
    ax.set_xlabel(axis)
    ax.set_ylabel("drift score vs champion's training data")
    ax.set_title(f"per-feature drift ({drift_owner} policy's champion)")
    ax.legend(fontsize=7, ncol=4)
    ax.grid(alpha=0.3)
    return _svg(fig)


def _windows(name: str, s: dict[str, Any], unit: str, calendar: bool) -> str:
    """How far back each retrain that chose its window looked: the window kept, of how many rows, and why."""
    chose = [v for v in s.get("verdicts", []) if v.get("window_of")]
    if not chose:
        return ""
    shorter = [v for v in chose if v["window"] < v["window_of"]]
    items = "".join(f"<li>{_when(v['at'], unit, calendar)}: {v['window']:,} of {v['window_of']:,} rows "
                    f"({html.escape(str(v['window_why']))}){'' if v['passed'] else ' — rejected by the gate'}</li>"
                    for v in chose[:15])
    more = f"<li>… {len(chose) - 15} more in summary.json</li>" if len(chose) > 15 else ""
    return (f"<details><summary>{html.escape(name)}: {len(shorter)} of {len(chose)} retrains that chose their "
            f"window kept a shorter one than the whole</summary><ul>{items}{more}</ul></details>")


def _companion(name: str, s: dict[str, Any], unit: str, calendar: bool) -> str:
    """When serving moved between the champion and the companion (``model.companion``), and why."""
    c = s.get("companion")
    if not c:
        return ""
    served = c["rows_served"] / max(s["predictions_scored"], 1)
    items = "".join(f"<li>{_when(w['at'], unit, calendar)}: {html.escape(w['why'])}</li>" for w in c["switched"][:15])
    more = f"<li>… {len(c['switched']) - 15} more in summary.json</li>" if len(c["switched"]) > 15 else ""
    when = f"each time {c['every']} labels matured" if c.get("every") else "at each tick"
    learned = (f"refitted on the newest {c['refit']} labels {when} ({c['rows_learned']:,} rows fitted)"
               if c.get("refit") else f"learned {c['rows_learned']:,} labels")
    return (f"<details><summary>{html.escape(name)}: {html.escape(c['estimator'])} {learned} and served "
            f"{served:.0%} of the rows; serving moved {c['switches']} times</summary>"
            f"<ul>{items}{more}</ul></details>")


def write_report(results: dict[str, dict[str, Any]], path: str | Path, *, title: str) -> Path:
    first = next(iter(results.values()))
    unit = first["time_unit"]
    calendar = _calendar(results)
    axis = "date (UTC)" if calendar else ("row" if unit == "rows" else f"time ({unit})")
    chart_metric = _metric_chart(results, unit, calendar, axis)
    chart_drift = _drift_chart(results, unit, calendar, axis)
    rows = summary_rows(results)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    reasons = ""
    for name, s in results.items():
        items = "".join(f"<li>{_when(d['at'], unit, calendar)}: {html.escape('; '.join(d['reasons']))}</li>"
                        for d in s["decisions"]["retrain"][:15])
        more = len(s["decisions"]["retrain"]) - 15
        reasons += (f"<details><summary>{html.escape(name)}: {len(s['decisions']['retrain'])} retrain decisions, "
                    f"skips {html.escape(str(s['decisions']['skip_counts']))}</summary><ul>{items}"
                    f"{f'<li>… {more} more in summary.json</li>' if more > 0 else ''}</ul></details>")
    windows = "".join(_windows(name, s, unit, calendar) for name, s in results.items())
    companions = "".join(_companion(name, s, unit, calendar) for name, s in results.items())
    problems = "".join(
        f"<li>{html.escape(name)}: {html.escape(line)}</li>" for name, s in results.items()
        for line in failure_lines(s))
    failures = f"<h2>Failures</h2><ul>{problems}</ul>" if problems else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Every prediction was made by the model serving at that moment and scored when its label matured
(label delay {html.escape(str(first['spec']['replay']['label_delay']))}). summary.json keeps staleness and
data-to-deploy in {unit} (its <code>units</code> names them); training seconds are wall-clock on this machine
(not part of summary.json).</p>
<h2>Quality over time</h2>{chart_metric}
<h2>Drift</h2>{chart_drift or '<p>No drift scores recorded.</p>'}
<h2>Summary</h2><table><tr>{head}</tr>{body}</table>
{failures}
<h2>Decisions</h2>{reasons}
<h2>Training windows</h2>{windows or '<p>No retrain chose its window (none answered a moved concept).</p>'}
{f'<h2>Companion</h2>{companions}' if companions else ''}
</body></html>"""
    out = Path(path)
    out.write_text(page)
    return out

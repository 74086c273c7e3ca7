"""The ``freshloop`` command line (Typer + Rich). It calls services; it never touches the store directly."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import pandas as pd
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .clock import WallClock
from .errors import FreshloopError, SpecError
from .spec import LoopSpec, load_spec, load_spec_dict

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="freshloop keeps a production model fresh: one loop, two clocks.")
quarantine_app = typer.Typer(no_args_is_help=True, help="List, show and re-ingest quarantined rows.")
app.add_typer(quarantine_app, name="quarantine")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

F = TypeVar("F", bound=Callable[..., Any])

DEMO_SPEC: dict[str, Any] = {
    "name": "rainfall",
    "data": {"label": "rain", "time": "day", "time_unit": "d"},
    "model": {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 1000},
              "window": {"period": "1095d"}},
    "replay": {"batch": {"period": "30d"}, "label_delay": "1d", "warmup": 365,
               "compare": ["never", "periodic:30d", "periodic:365d", "default"]},
}


_BAD_INPUT = (413, 415, 422)  # the statuses of input that breaks a rule: exit code 2, here and from a server
ReasonOpt = Annotated[str, typer.Option(help="why (recorded)")]
RolloutArg = Annotated[str, typer.Argument(help="rollout id (ro-N)")]


def _errors(fn: F) -> F:
    """One line on stderr and a non-zero exit for every error freshloop raises on purpose."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FreshloopError as e:
            err.print(f"[red]error[/red] ({e.code}): {e.message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if e.status in _BAD_INPUT else 1) from None

    return wrapper  # type: ignore[return-value]


def _read_table(path: Path, *, typed: bool = True) -> pd.DataFrame:
    from .data.files import read_submission

    sub = read_submission(path)
    if sub.malformed:
        first = sub.malformed[0]
        raise SpecError(f"{path}: line {first.line}: {first.reason}; fix the file or ingest it "
                        f"(malformed rows are quarantined there).", field="data", value=str(path))
    from .data.numbers import type_numbers

    # CSV cells arrive as text: columns of numbers are typed by the rule ingest and init share; the loop
    # re-validates every cell
    return type_numbers(sub.frame)[0] if sub.fmt == "csv" and typed else sub.frame


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


def _run_compare(spec: LoopSpec, frame: pd.DataFrame, out_dir: Path, policies: list[str], workers: int,
                 title: str) -> dict[str, dict[str, Any]]:
    from .replay import compare, write_report

    with _progress() as bar:
        tasks = {name: bar.add_task(name, total=None) for name in policies}

        def tell(name: str, done: int, total: int) -> None:
            bar.update(tasks[name], completed=done, total=total)

        results = compare(spec, frame, out_dir, policies, workers=workers, on_progress=tell)
    report = write_report(results, out_dir / "report.html", title=title)
    _print_results(results)
    out.print(f"wrote {out_dir / 'summary.json'} and {report}")
    failed = [name for name, s in results.items() if s.get("error")]
    if failed:
        err.print(f"[red]error[/red]: {len(failed)} of {len(results)} policies failed: {', '.join(failed)}",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return results


def _print_results(results: dict[str, dict[str, Any]]) -> None:
    from .replay import summary_rows

    rows = summary_rows(results)
    first = next(iter(results.values()))
    table = Table(title=f"{first['metric_name']} under a {first['spec']['replay']['label_delay']} label delay")
    for k in rows[0]:
        table.add_column(k, justify="left" if k == "policy" else "right")
    for r in rows:
        table.add_row(*["" if v is None else (f"{v:.4f}" if k == "metric" and isinstance(v, float) else str(v))
                        for k, v in r.items()])
    out.print(table)
    from .replay.report import failure_lines

    for name, s in results.items():
        for line in failure_lines(s):
            out.print(f"[yellow]{name}[/yellow]: {line}", highlight=False, soft_wrap=True)


@app.command()
@_errors
def demo(out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("freshloop-demo"),
         workers: Annotated[int, typer.Option(help="parallel replays")] = 2) -> None:
    """Replay the NOAA rainfall stream through the loop under several policies and write a report."""
    from .datasets import load_rainfall

    started = time.perf_counter()
    spec = load_spec_dict(DEMO_SPEC)
    frame = load_rainfall()
    out.print(f"Replaying rainfall ({len(frame):,} daily rows, 8 features, label 'rain') through the loop: "
              f"{', '.join(spec.replay.compare or [])}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loop.yaml").write_text(yaml.safe_dump(DEMO_SPEC, sort_keys=False))
    _run_compare(spec, frame, out_dir, list(spec.replay.compare or []), workers, "freshloop demo: rainfall")
    out.print(f"demo finished in {time.perf_counter() - started:.1f} s")


@app.command()
@_errors
def init(data: Annotated[Path, typer.Option(help="CSV, Parquet or JSON file")],
         label: Annotated[str, typer.Option(help="label column")],
         out_path: Annotated[Path, typer.Option("--out", help="spec file to write")] = Path("loop.yaml"),
         time_col: Annotated[str | None, typer.Option(
             "--time", help="time column (default: the one column of dates, datetimes or epoch times, if any)")] = None,
         time_unit: Annotated[str | None, typer.Option(
             help="what a number in the time column counts: s, ms, us, ns, m, h, d (default: the epoch unit its "
                  "values fit, else s)")] = None,
         task: Annotated[str | None, typer.Option(
             help="classification or regression (default: by the label's values)")] = None,
         warmup: Annotated[int | None, typer.Option(
             min=1, help="rows that train the first model (default: 1/10 of the rows, 200..5,000)")] = None,
         name: Annotated[str | None, typer.Option(help="loop name")] = None) -> None:
    """Write a loop spec for a data file: task, clock, features, sizes and model family inferred, each said in
    the spec's opening comment; the schema is locked at first ingest."""
    from .data.numbers import type_numbers
    from .data.times import UNIT_SECONDS
    from .suggest import suggest_spec

    raw = _read_table(data, typed=False)
    frame = type_numbers(raw)[0]
    if len(frame) == 0:
        raise SpecError(f"{data}: no rows (rule: init needs rows to infer features).", field="data")
    if time_col and time_col not in frame.columns:
        raise SpecError(f"--time: column {time_col!r} not in {data} (rule: must name a column). Columns are "
                        f"{list(frame.columns)!r}.", field="data.time", value=time_col)
    if task not in (None, "classification", "regression"):
        raise SpecError(f"--task: must be classification or regression. Got {task!r} instead.", field="data.task",
                        value=task)
    if time_unit is not None and time_unit not in UNIT_SECONDS:
        raise SpecError(f"--time-unit: must be one of {', '.join(UNIT_SECONDS)}. Got {time_unit!r} instead.",
                        field="data.time_unit", value=time_unit)
    loop_name = name or "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in data.stem) or "loop"
    found = suggest_spec(frame, label=label, name=loop_name, time=time_col, time_unit=time_unit, task=task,
                         warmup=warmup, raw=raw)
    schema = found.schema
    lines = [f"freshloop spec for {data.name}: {len(frame):,} rows.", *found.header,
             *(f"note: {n}" for n in found.notes)]
    out_path.write_text("".join(f"# {ln}\n" for ln in lines) + yaml.safe_dump(found.spec, sort_keys=False))
    out.print(f"wrote {out_path}: {len(schema.features)} features "
              f"({sum(f.kind == 'numeric' for f in schema.features)} numeric, "
              f"{sum(f.kind == 'categorical' for f in schema.features)} categorical), task {schema.task}, "
              f"model {found.choice['chosen'].rsplit('.', 1)[1]}")
    for note in found.notes:
        err.print(f"[yellow]note[/yellow] {note}", highlight=False, soft_wrap=True)
    from .store.keys import artifact_key, key_file

    if not os.environ.get("FRESHLOOP_ARTIFACT_KEY") and not key_file().exists():
        artifact_key()  # the models this loop registers are signed with it; it stays outside the store
        err.print(f"made the artifact key {key_file()} (0600): model artifacts are signed with it and only signed "
                  "ones are loaded", highlight=False, soft_wrap=True)


@app.command()
@_errors
def replay(spec_path: Annotated[Path, typer.Argument(help="loop spec (YAML)")],
           out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("freshloop-replay"),
           data: Annotated[Path | None, typer.Option(help="data file to replay")] = None,
           stream: Annotated[str | None, typer.Option(help="built-in stream instead of a file")] = None,
           compare_: Annotated[str | None, typer.Option("--compare", help="comma-separated policies")] = None,
           workers: Annotated[int, typer.Option(help="parallel replays")] = 2) -> None:
    """Replay a stream through the loop (several policies side by side) and write summary.json + report.html."""
    from .datasets import load_stream
    from .replay import default_compare

    spec = load_spec(spec_path)
    if stream:
        frame, _ = load_stream(stream)
    elif data:
        frame = _read_table(data)
    else:
        raise SpecError("replay: give --data FILE or --stream NAME (rule: a replay needs a stream).", field="data")
    if compare_:
        policies = [p.strip() for p in compare_.split(",") if p.strip()]
    else:
        policies = spec.replay.compare or default_compare(spec)
    _run_compare(spec, frame, out_dir, policies, workers, f"freshloop replay: {spec.name}")


NowOpt = Annotated[str | None, typer.Option(
    "--now", help="the time this call acts at, as epoch seconds or an ISO datetime (default: the wall clock); "
    "for an orchestrator's logical date or a backfill")]


@contextmanager
def _stores(spec_path: Path) -> Iterator[Any]:
    """The loop's metadata and blob stores alone, for a command that lists what they hold (opening the loop
    would load, unpickle, its champion); closed when the block ends."""
    from .store import open_stores

    spec = load_spec(spec_path)
    meta, blobs = open_stores(spec.store.root or ".", spec.store.url)
    try:
        yield meta, blobs
    finally:
        meta.close()


@contextmanager
def _reading(spec_path: Path) -> Iterator[Any]:
    """The loop's operations, for a command that only reads it (a server may be running on the same store)."""
    from .operations import Operations

    ops = Operations(_loop(load_spec(spec_path), None))
    try:
        yield ops
    finally:
        ops.close()


def _loop(spec: LoopSpec, now: str | None) -> Any:
    from .clock import SimulatedClock
    from .loop import Loop

    # a one-shot call serves no request while it trains: the refit alone, unless the spec asks for both
    return Loop(spec, clock=WallClock() if now is None else SimulatedClock(_parse_now(now)), actor="cli",
                serve_before_refit=bool(spec.gate.serve_before_refit))


@contextmanager
def _writing(spec_path: Path, command: str, now: str | None = None) -> Iterator[Any]:
    """The loop's operations (the HTTP service's own, :mod:`freshloop.operations`), for a command that writes
    it: refused while a server or another command writes the store (the server would never see what this one
    wrote), closed when the block ends."""
    from .operations import Operations
    from .store import store_claim

    spec = load_spec(spec_path)
    with store_claim(spec.name, spec.store.root or ".", spec.store.url, holder=f"`freshloop {command}`"):
        ops = Operations(_loop(spec, now))
        try:
            yield ops
        finally:
            ops.close()


def _parse_now(value: str) -> float:
    from .data.times import to_seconds

    secs, bad = to_seconds(pd.Series([value]), "s")
    if bad.iloc[0]:
        raise SpecError(f"--now: must be epoch seconds or an ISO datetime (rule: a time). Got {value!r} instead.",
                        field="now", rule="time", value=value)
    return float(secs.iloc[0])


@app.command()
@_errors
def ingest(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
           file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON file")],
           source: Annotated[str, typer.Option(help="source name")] = "cli",
           batch_id: Annotated[str | None, typer.Option(help="idempotency key (default: content hash)")] = None,
           now: NowOpt = None) -> None:
    """Validate and store a batch; bad rows are quarantined with reasons (exit code 3 if any)."""
    from .data.files import read_submission

    with _writing(spec_path, "ingest", now) as ops:
        res = ops.ingest_submission(read_submission(str(file)), source=source, batch_id=batch_id)
    out.print_json(json.dumps(res.to_dict()))
    if res.quarantined:
        for r in res.reasons[:5]:
            err.print(f"[yellow]quarantined[/yellow] {file}: {r}", highlight=False)
        raise typer.Exit(3)


@app.command()
@_errors
def tick(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
         json_out: Annotated[bool, typer.Option("--json", help="print the tick's report as JSON")] = False,
         now: NowOpt = None) -> None:
    """Run one pass of the loop on the wall clock (what the serve worker does periodically).

    Exit code 1 when the tick's training run failed, with the reason on stderr, so an orchestrator sees it."""
    with _writing(spec_path, "tick", now) as ops:
        rep = ops.tick()
    if json_out:
        out.print_json(json.dumps(rep.to_dict()))
    else:
        out.print(f"{rep.decision.kind if rep.decision else 'none'}: "
                  f"{'; '.join(rep.decision.reasons) if rep.decision else ''}", highlight=False)
        if rep.window:
            out.print(f"window: {rep.window['rows']} rows ({rep.window['why']})", highlight=False)
        if rep.serving:
            out.print(f"serving: {rep.serving}", highlight=False)
        if rep.verdict:
            out.print(f"verdict: {'passed' if rep.verdict.passed else 'rejected'}: {rep.verdict.reason}",
                      highlight=False)
        if rep.promoted:
            out.print(f"promoted version {rep.promoted}")
    if rep.run_error is not None:
        _run_failed(rep.run_id, rep.run_error)


def _run_failed(run_id: str | None, error: str | None) -> NoReturn:
    """A tick whose training run failed: the reason on stderr and exit code 1, for an orchestrator."""
    err.print(f"[red]error[/red] (run_failed): training run {run_id} failed: {error}", highlight=False,
              soft_wrap=True)
    raise typer.Exit(1)


@app.command()
@_errors
def predict(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
            file: Annotated[Path, typer.Argument(help="rows to predict (CSV, Parquet or JSON)")],
            out_path: Annotated[Path | None, typer.Option("--out", help="write the predictions here (CSV, "
                                                          "Parquet or JSON by suffix) instead of stdout")] = None,
            id_column: Annotated[str | None, typer.Option(help="column holding each row's id (default: new "
                                                           "prediction ids)")] = None,
            now: NowOpt = None) -> None:
    """Batch predictions from the champion, as a scheduled scoring job makes them: logged, so labels sent
    later with `freshloop feedback` are joined and scored, and the rows stored as the server stores them."""
    with _writing(spec_path, "predict", now) as ops:
        frame = _read_table(file)
        ids: list[str] | None = None
        if id_column is not None:
            if id_column not in frame.columns:
                raise SpecError(f"--id-column: column {id_column!r} is not in {file} (rule: name a column). "
                                f"Columns are {list(frame.columns)!r}.", field="id_column", value=id_column)
            ids = frame.pop(id_column).astype(str).tolist()
        res = ops.predict_table(frame, row_ids=ids)
        schema = ops.loop.schema
    table = pd.DataFrame({"prediction_id": res.row_ids, "prediction": res.predictions, "version": res.versions})
    if res.proba is not None and schema is not None:
        for j, c in enumerate(schema.classes or ()):
            table[f"proba_{c}"] = res.proba[:, j]
    if out_path is None:
        sys.stdout.write(table.to_csv(index=False))
        return
    suffix = out_path.suffix.lower()
    if suffix == ".parquet":
        table.to_parquet(out_path, index=False)
    elif suffix in (".json", ".jsonl"):
        table.to_json(out_path, orient="records", lines=suffix == ".jsonl")
    else:
        table.to_csv(out_path, index=False)
    err.print(f"{len(table)} predictions from version {int(res.versions[0]) if len(table) else '-'} -> {out_path}",
              highlight=False)


@app.command()
@_errors
def feedback(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
             file: Annotated[Path, typer.Argument(help="a table with prediction_id and label columns")],
             id_column: Annotated[str, typer.Option(help="column holding the ids predictions were made "
                                                    "under")] = "prediction_id",
             batch_id: Annotated[str | None, typer.Option(help="idempotency key (default: content hash)")] = None,
             now: NowOpt = None) -> None:
    """Labels for earlier predictions: stored as training data and joined to the logged predictions, which
    are scored for the monitor; ids with no logged prediction are reported (exit code 3 if any label was
    quarantined)."""
    frame = _read_table(file)
    for col in (id_column, "label"):
        if col not in frame.columns:
            raise SpecError(f"{file}: column {col!r} is missing (rule: feedback needs {id_column!r} and 'label'). "
                            f"Columns are {list(frame.columns)!r}.", field=col, value=str(file))
    with _writing(spec_path, "feedback", now) as ops:
        fb = ops.feedback(frame[id_column].astype(str).tolist(), frame["label"].tolist(), source="cli",
                          batch_id=batch_id)
    res = fb.ingest
    out.print_json(json.dumps({"batch_id": res.batch_id, "accepted": res.accepted, "quarantined": res.quarantined,
                               "reasons": res.reasons[:5], "scored": len(fb.scores),
                               "unmatched": len(fb.unmatched), "unmatched_ids": fb.unmatched[:5]}))
    if res.quarantined:
        raise typer.Exit(3)


def _not_a_feature(ref: pd.Series, role: str | None) -> str | None:
    """Why `freshloop drift` leaves a column out: its role in the spec, a row counter, or times."""
    from .data.schema import looks_like_index
    from .data.times import to_seconds

    if role is not None:
        return f"the {role} column"
    if looks_like_index(ref):
        return "a row counter"
    if pd.api.types.is_datetime64_any_dtype(ref) or (  # text: its first 1,000 cells are all times
            ref.dtype == object and ref.notna().any() and not to_seconds(ref.dropna()[:1000], "s")[1].any()):
        return "holds times"
    return None


@app.command()
@_errors
def drift(reference: Annotated[Path, typer.Argument(help="reference CSV, Parquet or JSON file")],
          current: Annotated[Path, typer.Argument(help="current CSV, Parquet or JSON file")],
          numeric: Annotated[str, typer.Option(help="statistic for numeric columns")] = "wasserstein",
          categorical: Annotated[str, typer.Option(help="statistic for other columns")] = "jensen_shannon",
          spec_path: Annotated[Path | None, typer.Option("--spec", help="a loop spec: its label, time and entity "
                                                         "columns are left out")] = None,
          label: Annotated[str | None, typer.Option(help="label column (left out)")] = None,
          time_col: Annotated[str | None, typer.Option("--time", help="time column (left out)")] = None,
          columns: Annotated[list[str] | None, typer.Option("--column", help="score only this column (repeat "
                                                            "for more), even a label or time column")] = None,
          json_out: Annotated[Path | None, typer.Option("--json", help="also write the report here")] = None) -> None:
    """Drift of every column of CURRENT against REFERENCE, on all rows (exit code 1 if any column drifted).

    The label, time and entity columns (from --spec, --label, --time) are left out, as are columns that
    look like a row counter or hold times; --column asks for columns by name instead."""
    from .data.files import read_submission
    from .data.numbers import type_numbers
    from .monitor import DEFAULT_THRESHOLDS, drift_report

    for name, value in (("numeric", numeric), ("categorical", categorical)):
        if value not in DEFAULT_THRESHOLDS:
            raise SpecError(f"--{name}: unknown statistic {value!r} (rule: one of {sorted(DEFAULT_THRESHOLDS)}).",
                            field=name, rule="statistic", value=value)
    # CSV cells arrive as text: columns of numbers are typed by the rule init and ingest use
    frames = [type_numbers(read_submission(path).frame)[0] for path in (reference, current)]
    shared = [c for c in frames[1].columns if c in frames[0].columns]
    left_out: dict[str, str] = {}
    if columns:
        missing = [c for c in columns if c not in shared]
        if missing:
            raise SpecError(f"--column: {missing!r} not in both files (rule: name shared columns). Shared columns "
                            f"are {shared!r}.", field="column", value=missing[0])
        names = list(columns)
    else:
        data = load_spec(spec_path).data if spec_path is not None else None
        roles = {label: "label", time_col: "time"}
        if data is not None:
            roles.update({data.label: "label", data.time: "time", data.entity: "entity"})
        left_out = {c: why for c in shared if (why := _not_a_feature(frames[0][c], roles.get(c))) is not None}
        names = [c for c in shared if c not in left_out]
    report = drift_report(frames[0], frames[1], columns=names, numeric=numeric, categorical=categorical)
    if left_out:
        err.print("left out: " + "; ".join(f"{c} ({why})" for c, why in left_out.items())
                  + " (--column asks for a column by name)", highlight=False, soft_wrap=True)
    table = Table(title=f"drift of {current.name} against {reference.name} ({len(frames[0])} / {len(frames[1])} rows)")
    for c in ("column", "statistic", "value", "threshold", "drifted"):
        table.add_column(c)
    for col, sc in report.items():
        table.add_row(col, sc.statistic, f"{sc.value:.6g}", f"{sc.threshold:g}", "yes" if sc.drifted else "no")
    out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps({c: {"statistic": sc.statistic, "value": sc.value, "threshold": sc.threshold,
                                            "drifted": sc.drifted, "p_value": sc.p_value} for c, sc in report.items()},
                                       indent=2))
    if any(sc.drifted for sc in report.values()):
        raise typer.Exit(1)


@app.command()
@_errors
def models(spec_path: Annotated[Path, typer.Argument(help="loop spec")]) -> None:
    """List model versions and aliases (from the metadata store alone: no model is loaded)."""
    from .operations import model_listing
    from .registry import Registry

    with _stores(spec_path) as (meta, blobs):
        listing = model_listing(Registry(meta, blobs))
    table = Table(title="model versions")
    for c in ("version", "aliases", "run", "snapshot", "rows", "gate", "sha256"):
        table.add_column(c)
    for v in listing:
        gate = v["gate_score"]
        table.add_row(str(v["version"]), ",".join(v["aliases"]), v["run_id"], str(v["snapshot_id"]),
                      str(v["train_rows"]), f"{float('nan') if gate is None else gate:.4f}", v["sha256"][:12])
    out.print(table)


@app.command()
@_errors
def history(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
            kind: Annotated[str | None, typer.Option(help="only events of this kind")] = None,
            limit: Annotated[int, typer.Option(help="newest N events")] = 50) -> None:
    """Print the event log: every state change with actor, reason and time."""
    with _stores(spec_path) as (meta, _):
        events = meta.events.list(kind, limit)
    table = Table(title="events")
    for c in ("id", "at", "kind", "actor", "reason"):
        table.add_column(c, overflow="fold")
    for e in events:
        table.add_row(str(e.id), _when(e.at), e.kind, e.actor, e.reason)
    out.print(table)


@app.command()
@_errors
def promote(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
            version: Annotated[int, typer.Argument(help="model version")],
            reason: ReasonOpt,
            actor: Annotated[str, typer.Option(help="who (recorded)")] = "operator") -> None:
    """Make a version the champion (one compare-and-set alias move, recorded)."""
    with _writing(spec_path, "promote") as ops:
        moved = ops.promote(version, actor=actor, reason=reason)
    out.print(f"champion -> version {version}" if moved else f"version {version} is already the champion; "
              "nothing was recorded", highlight=False)


@app.command()
@_errors
def rollback(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
             reason: ReasonOpt,
             actor: Annotated[str, typer.Option(help="who (recorded)")] = "operator") -> None:
    """Abort a rollout, or move the champion back to the version it replaced."""
    with _writing(spec_path, "rollback") as ops:
        version = ops.rollback(actor=actor, reason=reason)
    out.print(f"champion -> version {version}")


@quarantine_app.command("list")
@_errors
def quarantine_list(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
                    all_: Annotated[bool, typer.Option("--all", help="include re-ingested items")] = False) -> None:
    with _reading(spec_path) as ops:
        items = ops.quarantined(None if all_ else "held")
    table = Table(title="quarantine")
    for c in ("id", "batch", "rows", "status", "reasons"):
        table.add_column(c, overflow="fold")
    for q in items:
        table.add_row(q.id, q.batch_id, str(q.rows), q.status, "; ".join(q.reasons[:3]))
    out.print(table)


@quarantine_app.command("show")
@_errors
def quarantine_show(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
                    item: Annotated[str, typer.Argument(help="quarantine id")]) -> None:
    with _reading(spec_path) as ops:
        frame = ops.read_quarantine(item)
    out.print(frame.to_string(max_rows=50))


@quarantine_app.command("reingest")
@_errors
def quarantine_reingest(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
                        item: Annotated[str, typer.Argument(help="quarantine id")]) -> None:
    """Submit quarantined rows again (after fixing the spec); what still fails is quarantined again."""
    with _writing(spec_path, "quarantine reingest") as ops:
        res = ops.reingest(item)
    out.print_json(json.dumps(res.to_dict()))


@app.command()
@_errors
def serve(spec_path: Annotated[Path, typer.Argument(help="loop spec")],
          host: Annotated[str, typer.Option(help="bind address (non-loopback needs tokens)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port")] = 8000,
          tick_every: Annotated[str, typer.Option(help="worker tick period, e.g. 60s; 0 = only POST /v1/tick")] = "60s",
          tokens_file: Annotated[Path | None, typer.Option(help="file of token:role lines")] = None,
          no_auth: Annotated[bool, typer.Option("--no-auth", help="serve without tokens (loopback only): every "
                                                "local user and process may then act on the loop")] = False,
          metrics: Annotated[str, typer.Option(help="/metrics: auto (open on loopback, a reader's token "
                                               "elsewhere), open or token")] = "auto") -> None:
    """Serve predictions, take feedback and keep the model fresh: the same loop on the wall clock.

    Without tokens it makes an operator token of its own, printed once and kept in the store (0600), which
    `freshloop remote` finds."""
    import uvicorn

    from .api import Settings, create_app
    from .store import store_claim

    settings = Settings.build(spec_path, host=host, port=port, tick_every=tick_every, tokens_file=tokens_file,
                              no_auth=no_auth, metrics=metrics)
    spec = load_spec(spec_path)
    root = Path(spec.store.root or ".")
    with store_claim(spec.name, root, spec.store.url,  # one writer per store
                     holder=f"`freshloop serve` at http://{host}:{port}"), _server_token(settings, root) as forget:
        uvicorn.run(create_app(settings, on_shutdown=forget), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=30)


def _runtime_dir() -> Path:
    """Where a local server says how to reach it (as Jupyter's runtime files do): ``FRESHLOOP_RUNTIME_DIR``,
    else ``$XDG_RUNTIME_DIR/freshloop``, else ``~/.local/share/freshloop/runtime``."""

    if os.environ.get("FRESHLOOP_RUNTIME_DIR"):
        return Path(os.environ["FRESHLOOP_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "freshloop"
    return Path.home() / ".local" / "share" / "freshloop" / "runtime"


def _private_write(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by this user alone (0600), whatever the file's mode was."""

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@contextmanager
def _server_token(settings: Any, root: Path) -> Iterator[Callable[[], None]]:
    """The operator token a server without tokens made: kept in ``<root>/operator.token`` (0600) and named in
    a runtime file for its port, so `freshloop remote` on this machine finds it; printed once. Both files go
    when the server stops (the function yielded removes them)."""
    if settings.generated_token is None:
        yield lambda: None
        return
    token_file = root.resolve() / "operator.token"
    runtime = _runtime_dir() / f"server-{settings.port}.json"
    _private_write(token_file, settings.generated_token + "\n")
    _private_write(runtime, json.dumps({"url": f"http://{settings.host}:{settings.port}",
                                        "token_file": str(token_file)}))
    err.print(f"freshloop serve: no tokens configured, so this server made an operator token (kept in {token_file}, "
              f"0600; `freshloop remote` on this machine finds it; --no-auth serves without one):\n  "
              f"{settings.generated_token}", highlight=False, soft_wrap=True)

    def forget() -> None:
        runtime.unlink(missing_ok=True)
        token_file.unlink(missing_ok=True)

    try:
        yield forget
    finally:
        forget()


def _local_token(server: str) -> str | None:
    """The operator token a server on this machine made for itself (see ``_server_token``), if it did."""
    from urllib.parse import urlsplit

    url = urlsplit(server)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None  # a token made on this machine is never sent elsewhere
    try:
        info = json.loads((_runtime_dir() / f"server-{url.port or 80}.json").read_text())
        return str(Path(info["token_file"]).read_text().strip()) or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


@app.command()
@_errors
def check(spec_path: Annotated[Path, typer.Argument(help="loop spec")]) -> None:
    """Validate a spec file and print it with every default filled in.

    Refuses what a replay or a loop would: unknown keys (with the closest valid one), the estimator (allowed,
    importable, the parameters it takes) and a metric that does not score the task."""
    from .train.model import check_model

    spec = load_spec(spec_path)
    check_model(spec.model)
    out.print(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))


remote_app = typer.Typer(no_args_is_help=True, help="The same actions against a running `freshloop serve`.")
app.add_typer(remote_app, name="remote")
ServerOpt = Annotated[str, typer.Option("--server", envvar="FRESHLOOP_SERVER", help="base URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="FRESHLOOP_TOKEN", help="bearer token")]


def _call(method: str, server: str, path: str, token: str | None, *, headers: dict[str, str] | None = None,
          **kw: Any) -> Any:
    import httpx

    token = token or _local_token(server)
    all_headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    try:
        r = httpx.request(method, server.rstrip("/") + path, headers=all_headers, timeout=120, **kw)
    except httpx.TransportError as e:
        err.print(f"[red]error[/red]: cannot reach {server}: {e}", highlight=False)
        raise typer.Exit(1) from None
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"text": r.text}
    if r.status_code >= 400:
        err.print(f"[red]error[/red] ({body.get('code', r.status_code)}): {body.get('message', r.text)}",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2 if r.status_code in _BAD_INPUT else 1)
    return body


@remote_app.command("status")
def remote_status(server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """The loop's state: champion, rollout, counts."""
    out.print_json(json.dumps(_call("GET", server, "/v1/status", token)))


@remote_app.command("ingest")
def remote_ingest(file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON file")],
                  batch_id: Annotated[str | None, typer.Option(help="idempotency key")] = None,
                  server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """Upload a file as one batch (exit 3 if rows were quarantined)."""
    kinds = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet", ".json": "application/json",
             ".jsonl": "application/x-ndjson"}
    kind = kinds.get(file.suffix.lower(), "text/csv")
    params = {"batch_id": batch_id} if batch_id else {}
    res = _call("POST", server, "/v1/ingest/file", token, content=file.read_bytes(), params=params,
                headers={"Content-Type": kind})
    out.print_json(json.dumps(res))
    if res.get("quarantined"):
        raise typer.Exit(3)


@remote_app.command("predict")
def remote_predict(file: Annotated[Path, typer.Argument(help="rows to predict (CSV, Parquet or JSON)")],
                   server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """Predictions with their ids and the version that answered."""
    frame = _read_table(file)
    rows = json.loads(frame.to_json(orient="records"))
    out.print_json(json.dumps(_call("POST", server, "/v1/predict", token, json={"rows": rows})))


@remote_app.command("feedback")
def remote_feedback(file: Annotated[Path, typer.Argument(help="a table with prediction_id and label columns")],
                    server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """Labels for earlier predictions; unknown ids are reported, not dropped."""
    frame = _read_table(file)
    for col in ("prediction_id", "label"):
        if col not in frame.columns:
            raise typer.BadParameter(f"column {col!r} is missing from {file}")
    labels = json.loads(frame[["prediction_id", "label"]].to_json(orient="records"))
    out.print_json(json.dumps(_call("POST", server, "/v1/feedback", token, json={"labels": labels})))


def _operator_action(server: str, path: str, token: str | None, reason: str) -> None:
    """An operator's action on a server, with its recorded reason; prints the answer."""
    out.print_json(json.dumps(_call("POST", server, path, token, json={"reason": reason})))


@remote_app.command("promote")
def remote_promote(version: Annotated[int, typer.Argument(help="model version")],
                   reason: ReasonOpt,
                   server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    _operator_action(server, f"/v1/models/{version}/promote", token, reason)


@remote_app.command("rollback")
def remote_rollback(reason: ReasonOpt,
                    server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    _operator_action(server, "/v1/rollback", token, reason)


@remote_app.command("tick")
def remote_tick(server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """One pass of the server's loop now (exit 1 when its training run failed, with the reason)."""
    rep = _call("POST", server, "/v1/tick", token)
    out.print_json(json.dumps(rep))
    if rep.get("run_failed"):
        _run_failed(rep.get("run_id"), rep.get("run_error"))


JsonOpt = Annotated[bool, typer.Option("--json", help="print the JSON the server answered")]
KindOpt = Annotated[str | None, typer.Option(help="only this kind")]
LimitOpt = Annotated[int, typer.Option(help="the newest this many")]


def _when(at: float | None) -> str:
    """A loop time for a table: a UTC date, or the number itself for a clock that counts rows or days from
    zero (an epoch time is more than three years from 1970)."""
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(at))) if abs(at) > 1e8 else f"{float(at):,.6g}"


def _remote_table(server: str, path: str, token: str | None, params: dict[str, Any], json_out: bool, title: str,
                  columns: tuple[str, ...], row: Callable[[dict[str, Any]], list[str]]) -> None:
    """GET a list from the server: its JSON answer with --json, else a table of one ``row`` per item."""
    body = _call("GET", server, path, token, params=params)
    if json_out:
        out.print_json(json.dumps(body))
        return
    table = Table(title=f"{title} on {server}")
    for c in columns:
        table.add_column(c)
    for item in body["data"]:
        table.add_row(*row(item))
    out.print(table)


def _listing(kind: str | None, limit: int) -> dict[str, Any]:
    return {"limit": limit, **({"kind": kind} if kind else {})}


@remote_app.command("models")
def remote_models(server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None,
                  json_out: JsonOpt = False) -> None:
    """The server's model versions and aliases."""
    _remote_table(server, "/v1/models", token, {}, json_out, "model versions",
                  ("version", "aliases", "run", "snapshot", "rows", "created", "sha256"),
                  lambda v: [str(v["version"]), ",".join(v["aliases"]), str(v["run_id"]), str(v["snapshot_id"]),
                             str(v["train_rows"]), _when(v["created_at"]), str(v["sha256"])[:12]])


@remote_app.command("events")
def remote_events(server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None, kind: KindOpt = None,
                  limit: LimitOpt = 50, json_out: JsonOpt = False) -> None:
    """The server's event log, newest last."""
    _remote_table(server, "/v1/events", token, _listing(kind, limit), json_out, "events",
                  ("at", "kind", "actor", "reason"),
                  lambda e: [_when(e["at"]), e["kind"], str(e.get("actor", "")), e["reason"]])


@remote_app.command("decisions")
def remote_decisions(server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None, kind: KindOpt = None,
                     limit: LimitOpt = 50, json_out: JsonOpt = False) -> None:
    """The server's policy decisions with their reasons, newest last."""
    _remote_table(server, "/v1/decisions", token, _listing(kind, limit), json_out, "decisions",
                  ("at", "decision", "reasons"), lambda d: [_when(d["at"]), d["kind"], "; ".join(d["reasons"])])


@remote_app.command("approve")
def remote_approve(rollout_id: RolloutArg,
                   reason: ReasonOpt,
                   server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """Let a rollout waiting for approval take its last step."""
    _operator_action(server, f"/v1/rollouts/{rollout_id}/approve", token, reason)


@remote_app.command("abort")
def remote_abort(rollout_id: RolloutArg,
                 reason: ReasonOpt,
                 server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """Stop an active rollout; the champion keeps serving."""
    _operator_action(server, f"/v1/rollouts/{rollout_id}/abort", token, reason)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

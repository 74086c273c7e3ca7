"""The loop behind HTTP: the same ``Loop``, on the wall clock, with a worker thread.

Requests only predict, log and queue; the worker ingests the predicted rows as batches, flushes the
prediction log and ticks the loop, so training and I/O stay off the request path. Requests take only the
loop's short serving lock; the control path (ingest, feedback, ticks, operator actions) is serialised by a
second lock. Every answer is journaled to disk before it is sent (:mod:`.journal`), and a server that starts
again stores what a crash left there; stopping drains the queue and flushes the log.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..clock import Clock, WallClock, parse_duration
from ..data.files import parse_submission
from ..data.rules import record_text_problem
from ..data.schema import Schema
from ..data.store import IngestResult
from ..data.validate import first_record_error
from ..errors import BusyError, DataError, SpecError, TooLargeError
from ..loop import Loop, TickReport, predicted_batch_id
from ..operations import Operations
from ..spec import load_spec
from .journal import Entry, Journal

__all__ = ["LoopService", "Settings"]

ROLES = ("reader", "labeler", "operator")


@dataclass(frozen=True)
class Settings:
    """Built once at the edge (CLI or test), never at import time."""

    spec_path: Path
    host: str = "127.0.0.1"
    port: int = 8000
    tokens: dict[str, str] = field(default_factory=dict, repr=False)  # token -> role; none: no authentication
    tick_every: float = 60.0  # seconds between worker ticks; 0 = only on POST /v1/tick
    flush_every: float = 1.0  # seconds between worker drains: fewer, larger ingest batches cost less per row
    max_body_bytes: int = 10 * 1024 * 1024
    max_queue_rows: int = 200_000  # predicted rows waiting for ingest; beyond it predict answers 503
    max_batch_rows: int = 4096  # concurrent predict requests are scored together, up to this many rows
    metrics: str = "auto"  # /metrics: "open", "token" (a reader's), or "auto": open on loopback, token elsewhere
    generated_token: str | None = field(default=None, repr=False)  # the operator token made for this server

    def __post_init__(self) -> None:
        for token, role in self.tokens.items():
            if role not in ROLES:
                raise SpecError(f"tokens: role {role!r} for a token is not one of {ROLES} (rule: known roles).",
                                field="tokens", value=role)
            if len(token) < 16:
                raise SpecError("tokens: a token is shorter than 16 characters (rule: tokens are secrets).",
                                field="tokens")
        if self.metrics not in ("auto", "open", "token"):
            raise SpecError(f"metrics: {self.metrics!r} (rule: one of auto, open, token).", field="metrics",
                            value=self.metrics)
        if not self.tokens and not _is_loopback(self.host):
            raise SpecError(f"host: refusing to bind {self.host!r} without tokens (rule: a non-loopback address "
                            f"needs FRESHLOOP_TOKENS or --tokens-file).", field="host", value=self.host)

    @staticmethod
    def parse_tokens(text: str) -> dict[str, str]:
        """``token:role`` pairs separated by commas or newlines (env var or file)."""
        out: dict[str, str] = {}
        for part in text.replace("\n", ",").split(","):
            part = part.strip()
            if not part or part.startswith("#"):
                continue
            token, _, role = part.rpartition(":")
            if not token:
                raise SpecError("tokens: each entry must be 'token:role'.", field="tokens")
            out[token.strip()] = role.strip()
        return out

    @property
    def metrics_open(self) -> bool:
        return self.metrics == "open" or (self.metrics == "auto" and _is_loopback(self.host))

    @classmethod
    def build(cls, spec_path: Path, *, host: str = "127.0.0.1", port: int = 8000, tick_every: str = "60s",
              tokens_file: Path | None = None, no_auth: bool = False, metrics: str = "auto") -> Settings:
        """What ``freshloop serve`` runs with. Without tokens (``FRESHLOOP_TOKENS``, ``--tokens-file``) a server
        on loopback makes an operator token of its own, as Jupyter does: every local user and process could
        otherwise act on the loop. ``no_auth`` serves without any."""
        text = os.environ.get("FRESHLOOP_TOKENS", "")
        if tokens_file is not None:
            text += "\n" + tokens_file.read_text()
        tokens, generated = cls.parse_tokens(text), None
        if not tokens and not no_auth and _is_loopback(host):
            generated = secrets.token_urlsafe(32)
            tokens = {generated: "operator"}
        return cls(spec_path=spec_path, host=host, port=port, tokens=tokens, tick_every=parse_duration(tick_every),
                   metrics=metrics, generated_token=generated)


def _answer(ids: list[str], preds: list[Any], versions: list[int], proba: list[list[float]] | None,
            classes: list[str]) -> dict[str, Any]:
    """One request's answer: each row's prediction id, prediction, version and class probabilities."""
    items: list[dict[str, Any]] = [{"prediction_id": i, "prediction": p, "version": int(v)}
                                   for i, p, v in zip(ids, preds, versions, strict=True)]
    if proba is not None:
        for item, row in zip(items, proba, strict=True):
            item["proba"] = dict(zip(classes, row, strict=True))
    return {"data": items, "count": len(items)}


def _plain(values: list[Any]) -> list[Any]:
    """Predictions as JSON takes them (an object array's ``tolist`` keeps NumPy scalars)."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("freshloop_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("freshloop_request_seconds", "request latency", ["route", "version"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.ingest_rows = Counter("freshloop_ingest_rows_total", "rows ingested", ["outcome"], registry=r)
        self.predictions = Counter("freshloop_predictions_total", "rows predicted", ["version"], registry=r)
        self.labels = Counter("freshloop_labels_total", "labels received", ["outcome"], registry=r)
        self.label_lag = Histogram("freshloop_label_lag_seconds", "prediction to label", registry=r,
                                   buckets=(1, 10, 60, 600, 3600, 86400, 7 * 86400))
        self.live_metric = Gauge("freshloop_live_metric", "champion's live metric on matured labels", registry=r)
        self.drift = Gauge("freshloop_drift_score", "drift vs the champion's training data", ["feature"], registry=r)
        self.retrains = Counter("freshloop_retrains_total", "training runs", registry=r)
        self.rollbacks = Counter("freshloop_rollbacks_total", "rollbacks", registry=r)
        self.promotions = Counter("freshloop_promotions_total", "promotions", registry=r)
        self.champion = Gauge("freshloop_champion_version", "serving version", registry=r)
        self.staleness = Gauge("freshloop_champion_staleness_seconds", "age of the champion's newest training row",
                               registry=r)
        self.data_to_deploy = Histogram("freshloop_data_to_deploy_seconds",
                                        "newest training label's arrival to the model serving", registry=r,
                                        buckets=(1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400))
        self.predict_batch = Histogram("freshloop_predict_batch_requests", "predict requests scored per model call",
                                       registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.queue = Gauge("freshloop_ingest_queue_rows", "predicted rows waiting to be ingested", registry=r)
        self.awaiting = Gauge("freshloop_predictions_awaiting_labels", "logged predictions held for their labels",
                              registry=r)
        self.expired = Gauge("freshloop_predictions_expired", "predictions dropped from memory before their label "
                             "came (still in the log's files; a later label is stored, not scored)", registry=r)


class LoopService(Operations):
    """What the routes call: the CLI's :class:`~freshloop.operations.Operations`, with a worker, the queue of
    answered predictions, their journal and metrics. Predictions take only the loop's short serving lock;
    everything else (ingest, feedback, ticks, operator actions) is serialised by ``lock``, so a retrain never
    holds up a request."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.spec = load_spec(settings.spec_path)
        clock = clock or WallClock()
        # requests are answered while the loop trains: where that takes time on the clock, the gated fit serves
        # until its refit is ready (on a simulated clock nothing could see the interim version)
        super().__init__(Loop(self.spec, clock=clock, actor="serve"))
        self.loop.on_promote = self._promoted
        self._qlock = threading.Lock()  # the queue of predicted rows waiting to be ingested
        self.metrics = Metrics()
        self._queue: list[tuple[list[dict[str, Any]], list[str]]] = []  # predicted records and their ids
        self._queued_rows = 0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_tick = time.monotonic()
        # what a crash cut short: temporary files of writes that never finished, and answered predictions the
        # worker had not yet stored (the journal holds them)
        self.swept = self.loop.blobs.sweep()
        self.journal = Journal(self.loop.blobs.local_path("predictions/journal"), durable=self.loop.blobs.durable)
        self.recovered = self.recover()
        self.metrics.champion.set(self.loop.champion_version or 0)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._worker = threading.Thread(target=self._run, name="freshloop-worker", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Drain: ingest every queued row, flush the prediction log, close the store."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
        with self.lock:
            self._drain()
            self.loop.close()
        self.journal.close()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.flush_every):
            try:
                with self.lock:
                    self._drain()
                    due = self.settings.tick_every > 0 and \
                        time.monotonic() - self._last_tick >= self.settings.tick_every
                if due:
                    self.tick()
            except Exception as e:  # the worker must outlive one bad tick; the event log says why
                with self.lock:
                    self.loop.events.record("worker_error", f"{type(e).__name__}: {e}", {})

    def _drain(self) -> None:
        self.loop.score_shadow()
        with self._qlock:  # the queue and the journal's segment hold the same requests: both are taken at once
            queue, self._queue, self._queued_rows = self._queue, [], 0
            sealed = self.journal.seal()
        if not queue:
            return
        frames = pd.DataFrame.from_records([r for rows, _ in queue for r in rows])  # one frame, not a concat
        ids = [i for _, batch in queue for i in batch]
        self._store_predicted(frames, ids)
        self.loop.flush()
        if sealed is not None:  # its rows and predictions are stored: a restart has nothing to replay
            sealed.unlink(missing_ok=True)
        self.metrics.queue.set(self._queued())

    def recover(self) -> int:
        """Store what the journal holds of a server that stopped before its worker drained: each segment's rows
        ingested as the worker would have (the same batch id, so rows already stored are not stored twice)
        and its predictions logged, so their labels are still joined and scored. Returns the predictions."""
        total = 0
        for segment in self.journal.segments():
            entries = Journal.read(segment)
            if entries and self.loop.schema is not None:
                total += self._store_journaled(entries)
            segment.unlink()
        if total:
            self.loop.events.record("predictions_recovered", f"{total} predictions answered before the server "
                                    "stopped were stored from its journal", {"predictions": total})
        return total

    def _store_journaled(self, entries: list[Entry]) -> int:
        ids = [i for e in entries for i in e.ids]
        key = predicted_batch_id(ids)  # the batch id the worker gives the same requests
        if self.loop.meta.batches.find("predict", key) is None:  # the worker had not stored them
            rows = pd.DataFrame.from_records([r for e in entries for r in e.rows])
            self.loop.ingest(rows, source="predict", batch_id=key, row_ids=ids)
        log = self.loop.predictions
        for e in entries:
            preds = self.loop.typed_predictions(pd.Series([str(p) for p in e.predictions], dtype=object))
            proba = None if e.proba is None else np.asarray(e.proba, dtype=float)
            log.log(e.ids, e.at, e.versions[0], preds, proba, np.asarray(e.versions), {})
        for rid, labeled in zip(ids, self.loop.data.has_label(ids), strict=True):
            if labeled:  # its label came before the stop: it was scored then
                log.pop(rid)
        self.loop.flush()
        return len(ids)

    def _ingested(self, res: IngestResult) -> None:
        """A stored batch's rows in the ingest counters; a batch sent again (same id, same rows) counts once."""
        if not res.replayed:
            self.metrics.ingest_rows.labels("accepted").inc(res.accepted)
            self.metrics.ingest_rows.labels("quarantined").inc(res.quarantined)

    def _queued(self) -> int:
        with self._qlock:
            return self._queued_rows

    # -- actions ------------------------------------------------------------------------------
    def ingest_file(self, data: bytes, suffix: str, *, batch_id: str | None, source: str) -> IngestResult:
        """A CSV, Parquet or JSON upload, read from its bytes (errors name "the uploaded body", never a file of
        the server); its bytes are kept as submitted."""
        return self.ingest_submission(parse_submission(data, suffix, "the uploaded body"), batch_id=batch_id,
                                      source=source)

    def predict(self, rows: list[dict[str, Any]], keys: list[str] | None) -> dict[str, Any]:
        """One request's predictions (see :meth:`predict_many`)."""
        out = self.predict_many([(rows, keys)])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def predict_many(self, requests: list[tuple[list[dict[str, Any]], list[str] | None]]
                     ) -> list[dict[str, Any] | Exception]:
        """Several requests scored in one model call; each gets its own answer or its own error.

        Each request is checked alone (a bad one fails by itself); the good ones' rows are scored together,
        so concurrent callers share the per-call cost of the model. The serving path never takes the
        control lock: the loop's serving lock guards what it reads, and the rows join the ingest queue the
        worker drains."""
        schema = self.loop.schema
        results = self._checked(requests, schema)
        good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        if not good:
            return results

        def failing(e: Exception) -> list[dict[str, Any] | Exception]:
            return [e if i in good else r for i, r in enumerate(results)]

        queued, n = self._queued(), sum(len(requests[i][0]) for i in good)
        if queued + n > self.settings.max_queue_rows:
            return failing(BusyError(f"ingest queue holds {queued} rows (rule: at most "
                                     f"{self.settings.max_queue_rows}); retry shortly.", field="rows",
                                     rule="back-pressure"))
        rows_all: list[dict[str, Any]] = []
        ids: list[str] = []
        route_keys: list[str] = []
        for i in good:
            rows, keys = requests[i]
            mine = [f"p-{uuid.uuid4().hex}" for _ in rows]
            rows_all += rows
            ids += mine
            route_keys += keys if keys is not None else mine  # default routing key: the prediction id
        self.metrics.predict_batch.observe(len(good))
        try:  # records: no DataFrame per request
            out = self.loop.predict(rows_all, row_ids=ids, keys=route_keys, defer_shadow=True)
        except Exception as e:
            return failing(e)
        proba = None if out.proba is None else out.proba.tolist()
        preds, versions = _plain(out.predictions.tolist()), out.versions.tolist()
        try:
            self._journal_and_queue(Entry(out.at, ids, rows_all, versions, preds, proba))
        except OSError as e:
            return failing(BusyError(f"the prediction journal could not be written ({e.strerror}); retry shortly.",
                                     field="rows", rule="durable"))
        for v in set(versions):
            self.metrics.predictions.labels(str(v)).inc(versions.count(v))
        classes = [str(c) for c in schema.classes or []] if schema else []
        at = 0
        for i in good:
            n = len(requests[i][0])
            results[i] = _answer(ids[at:at + n], preds[at:at + n], versions[at:at + n],
                                 None if proba is None else proba[at:at + n], classes)
            at += n
        return results

    def _checked(self, requests: list[tuple[list[dict[str, Any]], list[str] | None]], schema: Schema | None
                 ) -> list[dict[str, Any] | Exception]:
        """Each request checked alone: an empty answer to fill in, or its own error."""
        results: list[dict[str, Any] | Exception] = []
        for rows, keys in requests:
            try:
                self._check_request(rows, keys, schema)
            except Exception as e:
                results.append(e)
                continue
            results.append({})
        return results

    def _journal_and_queue(self, entry: Entry) -> None:
        """On disk before anyone is answered (an answered prediction survives a crash), then queued for the
        worker to ingest; raises OSError when the journal cannot be written, and nothing is queued."""
        with self._qlock:
            self.journal.append(entry)
            self._queue.append((entry.rows, entry.ids))
            self._queued_rows += len(entry.ids)
            self.metrics.queue.set(self._queued_rows)

    def _check_request(self, rows: list[dict[str, Any]], keys: list[str] | None, schema: Schema | None) -> None:
        if not rows:
            raise DataError("rows: empty (rule: predict at least one row).", field="rows", rule="non-empty")
        most = self.settings.max_queue_rows
        if len(rows) > most:  # it would never fit in the ingest queue: 413, not a 503 to retry
            raise TooLargeError(f"rows: a request of {len(rows):,} rows (rule: at most {most:,} rows per request, "
                                "the ingest queue's size); send them in smaller requests.", field="rows",
                                rule="max rows", value=len(rows))
        for i, r in enumerate(rows):
            if (why := record_text_problem(r)) is not None:
                raise DataError(f"row {i}: {why}", field="rows", rule="unicode")
        if keys is not None and len(keys) != len(rows):
            raise DataError(f"keys: {len(keys)} keys for {len(rows)} rows (rule: one key per row).", field="keys")
        if schema is not None:
            problem = first_record_error(rows, schema, self.spec.data.quality)
            if problem is not None:
                raise DataError(problem, field="rows", rule="schema")

    def send_feedback(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """Labels sent for predictions: :meth:`feedback`, with the ids no prediction was made under (neither
        logged, stored nor waiting in the queue) and the label lag observed."""
        ids = [p for p, _ in pairs]
        with self._qlock:
            queued = {i for _, batch in self._queue for i in batch}
        with self.lock:
            known = [p in self.loop.predictions or self.loop.data.has_row(p) or p in queued for p in ids]
            served = {p: self.loop.predictions.get(p) for p in ids}
            before = {p: rec.at for p, rec in served.items() if rec is not None}
            fb = self.feedback(ids, [lab for _, lab in pairs], source="feedback")
            now = self.loop.clock.now()
        for at in before.values():
            self.metrics.label_lag.observe(max(0.0, now - at))
        self.metrics.labels.labels("accepted").inc(fb.ingest.accepted)
        self.metrics.labels.labels("quarantined").inc(fb.ingest.quarantined)
        unknown = [p for p, k in zip(ids, known, strict=True) if not k]
        return {"batch_id": fb.ingest.batch_id, "accepted": fb.ingest.accepted,
                "quarantined": fb.ingest.quarantined, "reasons": fb.ingest.reasons,
                "unknown_prediction_ids": unknown, "scored": len(fb.scores)}

    def _promoted(self, version: int, actor: str) -> None:
        """Data-to-deploy of each automatic promotion, observed when the version starts serving."""
        newest = self.loop.champion_lineage.get("newest_arrival")
        if actor == self.loop.actor and newest is not None:
            self.metrics.data_to_deploy.observe(max(0.0, self.loop.clock.now() - float(newest)))

    @contextmanager
    def _acting(self) -> Iterator[Loop]:
        """The control path, under its lock; the counters then move by what the loop did (retrains, rollbacks,
        promotions) and the champion gauge follows, whoever acted (a tick, or an operator)."""
        with self.lock:
            st = self.loop.stats
            before = (st.retrains, st.rollbacks, st.promotions)
            yield self.loop
            self.metrics.retrains.inc(st.retrains - before[0])
            self.metrics.rollbacks.inc(st.rollbacks - before[1])
            self.metrics.promotions.inc(st.promotions - before[2])
            self.metrics.champion.set(self.loop.champion_version or 0)

    def tick(self) -> TickReport:
        with self._acting() as loop:
            self._drain()
            rep = loop.tick()
            self._last_tick = time.monotonic()
            self.metrics.awaiting.set(self.loop.predictions.pending)
            self.metrics.expired.set(self.loop.predictions.expired)
            if rep.signals is not None:
                if rep.signals.live_metric is not None:
                    self.metrics.live_metric.set(rep.signals.live_metric)
                for f, s in rep.signals.drift.items():
                    self.metrics.drift.labels(f).set(s.value)
            if rep.data_age is not None:
                self.metrics.staleness.set(rep.data_age)
        return rep


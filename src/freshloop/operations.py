"""Every action on a loop and every read of it, for whoever asks: the CLI and the HTTP service alike.

``freshloop ingest``, ``tick``, ``feedback``, ``promote``… call :class:`Operations` on a loop they open for
the one call; ``freshloop serve`` runs :class:`~freshloop.api.service.LoopService`, which is the same class
with a worker, a prediction queue, a journal and metrics added. Actions are serialised by ``lock``, so a
tick never runs beside an operator's promotion.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from .data.files import MalformedRow, Submission
from .data.rules import record_text_problem, text_problem
from .data.store import IngestResult
from .errors import DataError
from .loop import FeedbackResult, Loop, PredictResult, TickReport, predicted_batch_id
from .registry import Registry
from .store import DecisionRecord, Event, QuarantineItem, RolloutRecord

__all__ = ["Operations", "model_listing"]


def model_listing(registry: Registry) -> list[dict[str, Any]]:
    """Each registered version with its aliases, run, snapshot and rows (read from the store: no model is
    loaded), oldest first."""
    aliases = registry.aliases()
    return [{"version": v.version, "run_id": v.run_id, "verdict_id": v.verdict_id, "sha256": v.artifact_sha256,
             "created_at": v.created_at, "aliases": sorted(k for k, x in aliases.items() if x == v.version),
             "snapshot_id": v.lineage.get("snapshot_id"), "train_rows": v.lineage.get("train_rows"),
             "gate_score": v.lineage.get("gate_score")}
            for v in registry.versions()]


class Operations:
    """The actions and reads of one open loop."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.lock = threading.RLock()  # the control path: ingest, feedback, ticks, operator actions

    @contextmanager
    def _acting(self) -> Iterator[Loop]:
        """An action, under the control lock (the HTTP service also moves its counters by what it did)."""
        with self.lock:
            yield self.loop

    def _ingested(self, res: IngestResult) -> None:
        """A batch was stored (the HTTP service counts its rows)."""

    # -- data and labels ----------------------------------------------------------------------
    def ingest(self, rows: list[dict[str, Any]], *, batch_id: str | None, source: str) -> IngestResult:
        """A batch of records. A record holding text that is not valid Unicode cannot become a row: it is
        quarantined as it came (its JSON, escaped) and the batch's others go on; the whole submission is kept
        as JSON, so columns the schema does not know are kept too."""
        if not rows:
            raise DataError("rows: empty (rule: a batch holds at least one row).", field="rows", rule="non-empty")
        broken = {i: why for i, r in enumerate(rows) if (why := record_text_problem(r)) is not None}
        malformed = [MalformedRow(i, json.dumps(rows[i]), f"row {i}: {why}") for i, why in broken.items()]
        good = [r for i, r in enumerate(rows) if i not in broken] if broken else rows
        return self._store(pd.DataFrame.from_records(good), batch_id=batch_id, source=source, malformed=malformed,
                           raw=json.dumps(rows).encode())

    def ingest_submission(self, sub: Submission, *, batch_id: str | None, source: str) -> IngestResult:
        """A CSV, Parquet or JSON file as read (its rows that could not be read are quarantined with it; its bytes
        are kept as submitted)."""
        return self._store(sub.frame, batch_id=batch_id, source=source, malformed=sub.malformed, raw=sub.raw)

    def _store(self, frame: pd.DataFrame, *, batch_id: str | None, source: str, malformed: list[MalformedRow],
               raw: bytes | None) -> IngestResult:
        with self.lock:
            res = self.loop.ingest(frame, source=source, batch_id=batch_id, malformed=malformed, raw=raw)
        self._ingested(res)
        return res

    def feedback(self, prediction_ids: list[str], labels: list[Any], *, source: str = "feedback",
                 batch_id: str | None = None) -> FeedbackResult:
        """Labels for earlier predictions: stored as training data, joined to the logged predictions and scored."""
        if not prediction_ids:
            raise DataError("labels: empty (rule: send at least one label).", field="labels", rule="non-empty")
        for p, label in zip(prediction_ids, labels, strict=True):
            if (why := text_problem("label", label)) is not None:
                raise DataError(f"prediction {p!r}: {why}", field="labels", rule="unicode")
        with self.lock:
            return self.loop.feedback(prediction_ids, labels, source=source, batch_id=batch_id)

    def predict_table(self, frame: pd.DataFrame, *, row_ids: list[str] | None = None) -> PredictResult:
        """A scoring job's rows: predicted by the champion, logged for their labels, and stored as the server
        stores the rows it answers."""
        with self.lock:
            res = self.loop.predict(frame, row_ids=row_ids)
            if res.row_ids:
                self._store_predicted(frame, res.row_ids)
        return res

    def _store_predicted(self, frame: pd.DataFrame, row_ids: list[str]) -> IngestResult:
        """Rows that were predicted, stored under their prediction ids as one batch whose id the ids make (so
        the same rows stored again, after a restart, are the same batch)."""
        res = self.loop.ingest(frame, source="predict", batch_id=predicted_batch_id(row_ids), row_ids=row_ids)
        self._ingested(res)
        return res

    def reingest(self, quarantine_id: str) -> IngestResult:
        """Submit a quarantined item's rows again (after fixing the spec); what still fails is quarantined again.
        The loop takes the batch as any other: its events, the monitor's windows, the label join."""
        with self.lock:
            res = self.loop.data.reingest(quarantine_id, now=self.loop.clock.now())
            if res.kind == "labels":
                acc = res.accepted_frame
                self.loop.observe_labels([] if acc is None else acc["_row_id"].astype(str).tolist(), res)
            else:
                self.loop.observe_ingest(res)
        self._ingested(res)
        return res

    # -- the loop and an operator's actions ---------------------------------------------------
    def tick(self) -> TickReport:
        with self._acting() as loop:
            return loop.tick()

    def promote(self, version: int, *, actor: str, reason: str) -> bool:
        with self._acting() as loop:
            return loop.promote(version, actor=actor, reason=reason)

    def rollback(self, *, actor: str, reason: str) -> int:
        with self._acting() as loop:
            return loop.rollback(actor=actor, reason=reason)

    def approve(self, rollout_id: str, *, actor: str, reason: str) -> None:
        with self._acting() as loop:
            loop.approve(rollout_id, actor=actor, reason=reason)

    def abort(self, rollout_id: str, *, actor: str, reason: str) -> None:
        with self._acting() as loop:
            loop.abort(rollout_id, actor=actor, reason=reason)

    # -- reading ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.lock:
            loop = self.loop
            r = loop.rollout
            return {"name": loop.spec.name, "champion": loop.champion_version, "schema_locked": loop.schema is not None,
                    # how the champion predicts a request's rows: its compiled form, or why scikit-learn does
                    "serving": loop.champion().serving if loop.champion_version is not None else None,
                    "rows": loop.data.rows, "auto_promotion": loop.auto_promotion,
                    "rollout": None if r is None or not r.active else
                    {"id": r.id, "version": r.version, "strategy": r.strategy, "share": r.share, "status": r.status},
                    "companion": self._companion(),
                    "stats": {"retrains": loop.stats.retrains, "promotions": loop.stats.promotions,
                              "rollbacks": loop.stats.rollbacks}}

    def _companion(self) -> dict[str, Any] | None:
        """The online companion beside the champion (``model.companion``): which model, whether it serves in the
        champion's place, how many labels it has learned, and how many requests it failed to answer since the
        loop opened (with the error, while it still fails)."""
        loop = self.loop
        c, spec = loop.companion, loop.spec.model.companion
        if spec is None or loop.schema is None:
            return None
        return {"estimator": c.estimator(), "refit": spec.refit, "every": spec.every, "serves": c.serving,
                "rows_learned": c.bundle.rows_seen_ if c.bundle is not None else 0,
                "errors": loop.stats.companion_errors, "last_error": c.last_error}

    def models(self) -> list[dict[str, Any]]:
        with self.lock:
            return model_listing(self.loop.registry)

    def decisions(self, kind: str | None = None, limit: int | None = None) -> list[DecisionRecord]:
        """The newest ``limit`` decisions (of one kind, or all), oldest first."""
        with self.lock:
            return self.loop.meta.decisions.list(kind, limit)

    def events(self, kind: str | None = None, limit: int | None = None) -> list[Event]:
        """The newest ``limit`` events (of one kind, or all), oldest first."""
        with self.lock:
            return self.loop.events.list(kind, limit)

    def rollouts(self) -> list[RolloutRecord]:
        with self.lock:
            return self.loop.meta.rollouts.list()

    def quarantined(self, status: str | None = "held") -> list[QuarantineItem]:
        return self.loop.data.quarantined(status)

    def read_quarantine(self, quarantine_id: str) -> pd.DataFrame:
        return self.loop.data.read_quarantine(quarantine_id)

    def close(self) -> None:
        with self.lock:
            self.loop.close()

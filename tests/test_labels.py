"""The prediction log: what was served, kept until its label comes."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_the_prediction_log_reads_back_what_it_wrote(tmp_path: Path) -> None:
    from freshloop.labels import PredictionLog
    from freshloop.store import open_stores

    _, blobs = open_stores(tmp_path)
    log = PredictionLog(blobs)
    proba = np.array([[0.9, 0.1], [0.2, 0.8]])
    log.log(["a", "b"], 1.0, 1, np.array([0, 1]), proba, np.array([1, 1]), {})
    log.log(["c"], 2.0, 1, np.array([1]), None, np.array([1]), {})
    log.log(["d", "e"], 3.0, 1, np.array([1, 0]), proba, np.array([2, 1]),
            {2: (np.array([1, 1]), proba), 1: (np.array([0, 0]), None)})
    log.flush()
    log.log(["f"], 4.0, 2, np.array([0]), proba[:1], np.array([2]), {})
    log.flush()

    back = PredictionLog(blobs)
    typed = lambda text: np.array([int(t) for t in text], dtype=object)  # noqa: E731
    assert back.restore(lambda ids: np.array([i != "b" for i in ids]), typed) == 5
    assert "b" not in back and back.pending == 5
    a, c, d, f = (back.get(i) for i in "acdf")
    assert a is not None and (a.at, a.version, a.pred) == (1.0, 1, 0) and a.proba.tolist() == [0.9, 0.1]
    assert c is not None and c.proba is None and c.pred == 1
    assert d is not None and d.version == 2 and d.alternatives[2][0] == 1 and d.alternatives[1] == (0, None)
    assert d.alternatives[2][1].tolist() == [0.9, 0.1]
    assert f is not None and (f.at, f.version) == (4.0, 2)


def test_the_prediction_log_holds_a_bounded_number_of_records(tmp_path: Path) -> None:
    from freshloop.labels import PredictionLog
    from freshloop.store import open_stores

    _, blobs = open_stores(tmp_path)
    log = PredictionLog(blobs, max_open=3)
    for i in range(5):
        log.log([f"p{i}"], float(i), 1, np.array([i % 2]), None, np.array([1]), {})
        if i in (1, 4):
            log.flush()  # two parts: p0-p1 and p2-p4; what leaves memory stays in them
    assert (log.pending, log.expired) == (3, 2)
    assert "p0" not in log and "p1" not in log and log.pop("p4") is not None
    back = PredictionLog(blobs, max_open=3)
    typed = lambda text: np.array([int(t) for t in text], dtype=object)  # noqa: E731
    # a restart reads the newest records still waiting (p4's label came), newest part first, as many as it holds
    assert back.restore(lambda ids: np.array([i != "p4" for i in ids]), typed) == 3
    assert back.waiting() == ["p1", "p2", "p3"] and back.get("p1").pred == 1  # type: ignore[union-attr]

"""The refit companion's size, stream by stream: the default policy of init's spec with ``model.companion.refit``
at several sizes, beside never retraining and the default without a companion.

    python bench/refit.py --only usenet1 --only usenet2 --size 45 --size 60 --size 90
    python bench/refit.py --size 60 --size 30/class     # every stream; K/class: K labels per class, at least 60
    python bench/refit.py --only outdoorStream --size 30/class --every 1 --every 1/8   # refit once 1/8 is new

One replay per contender (no ARF, no fixed periods: those are ``bench/streams.py``'s), so a stream takes seconds
to a few minutes. Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from freshloop.suggest import refit_size


def size_for(size: str, classes: int) -> int:
    """An int, or ``K/class``: K labels per class (one class for a regression), at least 60, by init's rule.

    >>> size_for("60", 24), size_for("30/class", 2), size_for("30/class", 24)
    (60, 60, 720)
    """
    if size.endswith("/class"):
        return refit_size(classes, per_class=int(size.removesuffix("/class")))
    return int(size)


def every_for(every: str, rows: int) -> int | None:
    """``model.companion.every`` for a refit on ``rows`` labels: an int, or ``1/K``: a K-th of them (1: none).

    >>> every_for("1", 720), every_for("1/8", 720), every_for("1/8", 60), every_for("40", 720)
    (None, 90, 7, 40)
    """
    if every.startswith("1/"):
        return max(1, rows // int(every.removeprefix("1/")))
    return int(every) if int(every) > 1 else None


def replay(spec: Any, frame: Any, policy: str, refit: int | None, every: int | None = None) -> dict[str, Any]:
    from quality import with_refit

    from freshloop.replay import compare

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        s = compare(with_refit(spec, refit, every), frame, Path(tmp), [policy], workers=1)[policy]
    c = s.get("companion") or {}
    return {"metric": s["metric"], "rows": s["training_rows"], "seconds": time.perf_counter() - started,
            "served": (c.get("rows_served") or 0) / max(s["predictions_scored"], 1), "switches": c.get("switches")}


def main() -> int:
    import quality
    from rich.console import Console
    from rich.progress import track
    from streams import streams

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", default=[], help="this stream only (repeat for more)")
    ap.add_argument("--size", action="append", default=[], help="a refit size: N labels, or K/class (repeat)")
    ap.add_argument("--every", action="append", default=[],
                    help="labels matured between refits: N, or 1/K of the size (repeat; default 1: every tick)")
    a = ap.parse_args()
    sizes, everies = a.size or ["60"], a.every or ["1"]
    print("| stream | classes | refit | every | never | default, no companion | default with the refit | − never | "
          "companion serves | switches | training rows | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, loaded in track(streams(a.only), description="streams", console=Console(stderr=True)):
        frame, info = loaded if loaded is not None else quality.load_stream(name, n=n)
        spec, *_ = quality.stream_spec(name, frame, info)
        classes = 1 if spec.data.task == "regression" else \
            len(spec.data.classes or []) or int(frame[info["label"]].nunique())
        never, plain = replay(spec, frame, "never", None), replay(spec, frame, "default", None)
        for size, every in ((size, every) for size in sizes for every in everies):
            rows = size_for(size, classes)
            each = every_for(every, rows)
            r = replay(spec, frame, "default", rows, each)
            print(f"| {name} | {classes} | {rows} ({size}) | {each or 1} ({every}) | {never['metric']:.4f} | "
                  f"{plain['metric']:.4f} | {r['metric']:.4f} | {100 * (r['metric'] - never['metric']):+.2f} | "
                  f"{r['served']:.0%} | "
                  f"{r['switches']} | {r['rows']:,} | {r['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

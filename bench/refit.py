"""The refit companion's size, stream by stream: the default policy of init's spec with ``model.companion.refit``
at several sizes, beside never retraining and the default without a companion.

    python bench/refit.py --only usenet1 --only usenet2 --size 45 --size 60 --size 90
    python bench/refit.py --size 60 --size 30/class     # every stream; K/class: K labels per class, at least 60

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


def replay(spec: Any, frame: Any, policy: str, refit: int | None) -> dict[str, Any]:
    from quality import with_refit

    from freshloop.replay import compare

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        s = compare(with_refit(spec, refit), frame, Path(tmp), [policy], workers=1)[policy]
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
    a = ap.parse_args()
    sizes = a.size or ["60"]
    print("| stream | classes | refit | never | default, no companion | default with the refit | − never | "
          "companion serves | switches | training rows | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, loaded in track(streams(a.only), description="streams", console=Console(stderr=True)):
        frame, info = loaded if loaded is not None else quality.load_stream(name, n=n)
        spec, *_ = quality.stream_spec(name, frame, info)
        classes = 1 if spec.data.task == "regression" else \
            len(spec.data.classes or []) or int(frame[info["label"]].nunique())
        never, plain = replay(spec, frame, "never", None), replay(spec, frame, "default", None)
        for size in sizes:
            rows = size_for(size, classes)
            r = replay(spec, frame, "default", rows)
            print(f"| {name} | {classes} | {rows} ({size}) | {never['metric']:.4f} | {plain['metric']:.4f} | "
                  f"{r['metric']:.4f} | {100 * (r['metric'] - never['metric']):+.2f} | {r['served']:.0%} | "
                  f"{r['switches']} | {r['rows']:,} | {r['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

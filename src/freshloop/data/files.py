"""Reading submissions: CSV, Parquet, JSON records / JSON lines.

CSV is read with every column as text so that quarantined values stay exactly as submitted;
rows with the wrong number of fields are kept with their raw text and line number.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import DataError

__all__ = ["MalformedRow", "Submission", "parse_submission", "read_submission"]


@dataclass(frozen=True)
class MalformedRow:
    line: int | None
    text: str
    reason: str


@dataclass
class Submission:
    frame: pd.DataFrame
    malformed: list[MalformedRow]
    raw: bytes
    fmt: str


def _read_csv(raw: bytes, name: str) -> tuple[pd.DataFrame, list[MalformedRow]]:
    first = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip("\r")
    if not first.strip():
        raise DataError(f"{name}: empty file (rule: a CSV submission needs a header row and at least one row).",
                        field="file", rule="non-empty", value=name)
    header = next(iter(__import__("csv").reader([first])))
    malformed: list[MalformedRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append(MalformedRow(row.number, row.text,
                                      f"row: expected {row.expected_columns} fields, got {row.actual_columns} "
                                      f"(rule: every CSV row has one field per header column)"))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(raw),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as e:
        raise DataError(f"{name}: not a readable CSV file ({e}).", field="file", rule="csv", value=name) from None
    frame = table.to_pandas()
    for c in frame.columns:
        frame[c] = frame[c].astype(object)
    return frame, malformed


def read_submission(path: str | Path) -> Submission:
    """Read a CSV, Parquet or JSON file into a frame, keeping its raw bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.", field="file", value=str(path)) from None
    return parse_submission(raw, path.suffix, str(path))


def parse_submission(raw: bytes, suffix: str, name: str) -> Submission:
    """A CSV, Parquet or JSON submission's bytes (read by ``suffix``) as a frame; errors call it ``name``."""
    if not raw.strip():
        raise DataError(f"{name}: empty file (rule: a submission needs at least one row).",
                        field="file", rule="non-empty", value=name)
    suffix = suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pq.read_table(io.BytesIO(raw)).to_pandas()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{name}: not a readable Parquet file ({e}).", field="file", value=name) from None
        return Submission(frame, [], raw, "parquet")
    if suffix in (".json", ".jsonl", ".ndjson"):
        text = raw.decode("utf-8", errors="replace")
        malformed: list[MalformedRow] = []
        records: list[dict[str, object]] = []
        try:
            loaded = json.loads(text)
            records = loaded if isinstance(loaded, list) else [loaded]
        except json.JSONDecodeError:
            for i, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not an object")
                    records.append(rec)
                except ValueError as e:
                    malformed.append(MalformedRow(i, line, f"row: not a JSON object ({e})"))
        bad = [r for r in records if not isinstance(r, dict)]
        if bad:
            raise DataError(f"{name}: JSON must be a list of objects or JSON lines.", field="file", value=name)
        return Submission(pd.DataFrame.from_records(records), malformed, raw, "json")
    frame, malformed = _read_csv(raw, name)
    return Submission(frame, malformed, raw, "csv")

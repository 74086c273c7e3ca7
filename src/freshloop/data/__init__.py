"""Data: ingest, schema and quality checks, quarantine, immutable Parquet batches and snapshots."""

from .files import MalformedRow, Submission, read_submission
from .schema import Feature, Schema, infer_schema
from .snapshot import Snapshot
from .store import DataStore, IngestResult
from .validate import ValidationResult, validate_frame

__all__ = ["DataStore", "Feature", "IngestResult", "MalformedRow", "Schema", "Snapshot", "Submission",
           "ValidationResult", "infer_schema", "read_submission", "validate_frame"]

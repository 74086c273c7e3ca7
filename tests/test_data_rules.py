"""The request validator and validate_frame must agree: same verdict, same first message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from freshloop.data.rules import categories as _categories
from freshloop.data.schema import Feature, Schema
from freshloop.data.validate import first_error, first_record_error, validate_frame
from freshloop.spec import QualitySpec
from freshloop.train.model import ModelBundle

SCHEMA = Schema("y", "classification", (Feature("x", "numeric", -1.0, 1.0), Feature("z", "numeric", 0.0, 10.0),
                                        Feature("c", "categorical", categories=("a", "b"))), classes=(0, 1))
TIMED = Schema("y", "classification", SCHEMA.features, classes=(0, 1), time="t")

number_like = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-10**6, 10**6),
                        st.sampled_from(["1.5", " 2 ", "abc", "", "inf", "-inf", "nan", "1e400", "0x10"]),
                        st.none(), st.booleans())
# Categories arrive as text. (A number in a categorical column is read as sent by the request validator,
# while pandas may first widen the whole column to floats: 0 -> 0.0. The request validator is the faithful one.)
category_like = st.one_of(st.sampled_from(["a", "b", "q", "", " ", "0"]), st.none())


@st.composite
def records(draw: st.DrawFn, timed: bool) -> list[dict[str, object]]:
    n = draw(st.integers(1, 4))
    drop = draw(st.sampled_from([None, "x", "c", "t"]))
    out = []
    for _ in range(n):
        r: dict[str, object] = {"x": draw(number_like), "z": draw(number_like), "c": draw(category_like)}
        if timed:
            r["t"] = draw(st.one_of(st.integers(0, 10**6), st.floats(0, 1e6), st.none()))
        if drop and drop in r:
            del r[drop]
        out.append(r)
    return out


def slow(rows: list[dict[str, object]], schema: Schema, quality: QualitySpec) -> str | None:
    q = quality.model_copy(update={"duplicates": "accept", "max_missing_rate": 1.0})
    return first_error(validate_frame(pd.DataFrame.from_records(rows), schema, q, now=0.0))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(rows=records(timed=False), strict=st.booleans())
def test_request_validator_matches_validate_frame(rows: list[dict[str, object]], strict: bool) -> None:
    quality = QualitySpec(out_of_range="quarantine", unseen_categories="quarantine") if strict else QualitySpec()
    assert first_record_error(rows, SCHEMA, quality) == slow(rows, SCHEMA, quality)


@settings(max_examples=150, deadline=None)
@given(rows=records(timed=True))
def test_request_validator_matches_with_a_time_column(rows: list[dict[str, object]]) -> None:
    assert first_record_error(rows, TIMED, QualitySpec()) == slow(rows, TIMED, QualitySpec())


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(rows=records(timed=False))
def test_records_encode_like_their_frame(rows: list[dict[str, object]]) -> None:
    """Requests are encoded from their records; the model must see what the frame path would give it."""
    assume(first_record_error(rows, SCHEMA, QualitySpec()) is None)  # only valid rows reach a model
    bundle = ModelBundle(SCHEMA, "sklearn.linear_model.LogisticRegression", {})
    np.testing.assert_array_equal(bundle.encode(rows), bundle.encode(pd.DataFrame.from_records(rows)))


@settings(max_examples=200, deadline=None)
@given(cells=st.lists(st.one_of(st.sampled_from(["a", "b", "q", "", " ", " a", "0"]), st.none(),
                                st.just(float("nan")), st.integers(0, 2)), min_size=1, max_size=30))
def test_categories_read_per_distinct_value_like_per_cell(cells: list[object]) -> None:
    """Text columns are judged once per distinct value; the answer must be pandas' per-cell reading."""
    s = pd.Series(cells, dtype=object)
    values, filled, known = _categories(s, ("a", "b"))
    text = s.astype("string")
    want_filled = (text.notna() & (text.str.strip() != "")).fillna(False).to_numpy(dtype=bool)
    np.testing.assert_array_equal(filled, want_filled)
    np.testing.assert_array_equal(known & filled, (text.isin(["a", "b"]).fillna(False).to_numpy(dtype=bool))
                                  & want_filled)
    want = text.where(pd.Series(want_filled)).astype(object).to_numpy()
    assert [None if v is pd.NA else v for v in values] == [None if v is pd.NA else v for v in want]

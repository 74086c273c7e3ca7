"""What a careless or malicious client sends: bodies past the limit however they are sent, strings without
end, numbers past 64 bits, lone surrogates, broken CSV. Each gets a 4xx that names the field, the rule and
the value; no 500, the connection stays usable, and a submission that is refused is kept in quarantine.

Run with ``pytest -k malicious`` (with the other fault tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freshloop.api import BackgroundServer, LoopService, Settings, create_app

from .conftest import make_frame
from .test_api import records, write_spec

LIMIT = 1024 * 1024  # the server's body limit in these tests


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, LoopService]]:
    """A server with a champion, on a loopback port; one client, so a dropped connection shows."""
    spec = write_spec(tmp_path_factory.mktemp("hostile"))
    settings = Settings(spec_path=spec, tick_every=0, max_body_bytes=LIMIT, max_queue_rows=5000)
    service = LoopService(settings)
    server = BackgroundServer(create_app(settings, service=service))
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/ingest", json={"rows": records(make_frame(400), True), "batch_id": "warm"})
        assert r.status_code == 200, r.text
        assert c.post("/v1/tick").status_code == 200
        yield c, service
    server.stop()


def refused(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """A 4xx answer of freshloop's shape whose message holds ``words``."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) >= {"code", "message", "field"}, body
    for w in words:
        assert w in body["message"], (w, body)
    return body


def still_serving(c: httpx.Client) -> None:
    """The same connection answers the next request."""
    assert c.get("/v1/status").status_code == 200


def chunks(payload: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(payload), size):
        yield payload[i:i + size]


# -- limits that hold for every body -----------------------------------------------------------------------


def test_malicious_chunked_body_past_the_limit_is_413(served: tuple[httpx.Client, LoopService]) -> None:
    c, service = served
    rows = json.dumps({"rows": [{"x1": 0.1, "x2": 0.2, "c": "a"}] * 80000}).encode()
    assert len(rows) > 2 * LIMIT
    before = service.loop.data.rows
    for path in ("/v1/predict", "/v1/ingest"):
        # no Content-Length: the body arrives chunked, and is counted as it is read
        r = c.post(path, content=chunks(rows), headers={"Content-Type": "application/json"})
        refused(r, 413, f"{LIMIT:,} bytes", "request body size limit")
        still_serving(c)
    r = c.post("/v1/ingest/file", content=chunks(b"x1,x2,c,y\n" + b"0.1,0.2,a,1\n" * 200000),
               headers={"Content-Type": "text/csv"})
    refused(r, 413, "request body size limit")
    assert service.loop.data.rows == before
    still_serving(c)


def test_malicious_request_larger_than_the_ingest_queue_is_413_not_retry(
        served: tuple[httpx.Client, LoopService]) -> None:
    c, _ = served
    rows = records(make_frame(5001), False)
    body = refused(c.post("/v1/predict", json={"rows": rows}), 413, "5,001 rows", "at most 5,000")
    assert body["field"] == "rows" and "retry" not in body["message"]
    still_serving(c)


@pytest.mark.parametrize("where", ["batch_id", "source", "reason", "actor", "idempotency", "query"])
def test_malicious_strings_without_end_are_refused(served: tuple[httpx.Client, LoopService], where: str) -> None:
    c, _ = served
    big = "b" * (100_000 if where in ("batch_id", "source", "reason") else 5_000)  # a URL or header is shorter
    rows = records(make_frame(3, seed=9), True)
    if where in ("batch_id", "source"):
        r = c.post("/v1/ingest", json={"rows": rows, where: big})
    elif where == "idempotency":
        r = c.post("/v1/ingest", json={"rows": rows}, headers={"Idempotency-Key": big})
    elif where == "reason":
        r = c.post("/v1/rollback", json={"reason": big})
    elif where == "actor":
        r = c.post("/v1/rollback", json={"reason": "x"}, headers={"X-Actor": big})
    else:
        r = c.post(f"/v1/ingest/file?batch_id={big}", content=b"x1,x2,c,y\n0.1,0.2,a,1\n",
                   headers={"Content-Type": "text/csv"})
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert "at most" in r.json()["message"], r.json()
    still_serving(c)


@pytest.mark.parametrize("limit", ["0", "-1", "100000000", "x"])
def test_malicious_listing_limits_are_validated(served: tuple[httpx.Client, LoopService], limit: str) -> None:
    c, _ = served
    for path in ("/v1/events", "/v1/decisions"):
        refused(c.get(path, params={"limit": limit}), 422, "limit")
    assert len(c.get("/v1/events", params={"limit": "1"}).json()["data"]) == 1
    still_serving(c)


# -- no 500s, and the submission is still kept ---------------------------------------------------------------


def test_malicious_integers_past_64_bits(served: tuple[httpx.Client, LoopService]) -> None:
    c, service = served
    huge = 10**400
    row = {"x1": huge, "x2": 0.2, "c": "a", "y": 1}
    r = c.post("/v1/ingest", content=json.dumps({"rows": [row, {**row, "x1": 0.5}]}),
               headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["quarantined"]) == (1, 1), r.json()
    assert "field 'x1'" in r.json()["reasons"][0] and "1000000000" in r.json()["reasons"][0]
    held = service.loop.data.quarantined()[-1]
    assert held.rows == 1
    refused(c.post("/v1/predict", content=json.dumps({"rows": [row]}), headers={"Content-Type": "application/json"}),
            422, "row 0: field 'x1': must lie within ±1e+38, as larger values overflow a model's arithmetic (got "
            "10000000000000000000…")
    pid = c.post("/v1/predict", json={"rows": records(make_frame(1, seed=3), False)}).json()["data"][0]["prediction_id"]
    r = c.post("/v1/feedback", content=json.dumps({"labels": [{"prediction_id": pid, "label": huge}]}),
               headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 422) and r.status_code != 500, r.text
    refused(c.post("/v1/models/9223372036854775808/promote", json={"reason": "x"}), 422, "version")
    still_serving(c)


def send(c: httpx.Client, path: str, body: Any) -> httpx.Response:
    """``body`` as JSON with ASCII escapes, as any JSON encoder may send it: a lone surrogate is ``\\ud800``
    on the wire (httpx's own encoder writes UTF-8, which cannot carry one)."""
    return c.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("where", ["value", "column", "batch_id", "source", "prediction_id", "predict"])
def test_malicious_lone_surrogates(served: tuple[httpx.Client, LoopService], where: str) -> None:
    c, service = served
    lone = "\ud800"
    row: dict[str, Any] = {"x1": 0.1, "x2": 0.2, "c": "a", "y": 1}
    if where == "value":
        r = send(c, "/v1/ingest", {"rows": [{**row, "c": "a" + lone}, row]})
        assert r.status_code == 200, r.text
        assert r.json()["quarantined"] == 1 and "field 'c'" in r.json()["reasons"][0], r.json()
        assert "\\ud800" in service.loop.data.quarantined()[-1].reasons[0]
    elif where == "column":
        r = send(c, "/v1/ingest", {"rows": [{**row, "x" + lone: 1}, row]})
        assert r.status_code == 200, r.text
        assert r.json()["quarantined"] == 1 and "column 'x\\ud800'" in r.json()["reasons"][0], r.json()
    elif where in ("batch_id", "source"):
        refused(send(c, "/v1/ingest", {"rows": [row], where: "k" + lone}), 422, where)
    elif where == "prediction_id":
        refused(send(c, "/v1/feedback", {"labels": [{"prediction_id": "p-" + lone, "label": 1}]}), 422,
                "prediction_id")
    else:
        refused(send(c, "/v1/predict", {"rows": [{**row, "c": lone}]}), 422, "field 'c'")
    still_serving(c)
    assert service.loop.data.rows >= 400


def test_malicious_csv_bodies_are_kept(served: tuple[httpx.Client, LoopService]) -> None:
    c, service = served
    held = len(service.loop.data.quarantined())
    bare_cr = b'x1,x2,c,y\n0.1,0.2,"a\rb",1\n0.3,0.4,b,0\n'
    r = c.post("/v1/ingest/file", content=bare_cr, headers={"Content-Type": "text/csv"})
    assert r.status_code in (200, 422), r.text
    still_serving(c)
    dup = b"x1,x2,x1,c,y\n0.1,0.2,0.3,a,1\n"
    r = c.post("/v1/ingest/file", content=dup, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json()["status"] == "quarantined", r.text
    assert r.json()["reasons"] == ["column 'x1': appears 2 times (rule: each column is named once)"], r.json()
    assert len(service.loop.data.quarantined()) > held  # the refused file is kept, as it came
    still_serving(c)


def test_malicious_json_objects_where_a_category_belongs(served: tuple[httpx.Client, LoopService]) -> None:
    """Found by the fuzzer: a list or an object in a categorical column was a 500 (unhashable)."""
    c, _ = served
    row = {"x1": 0.1, "x2": 0.2, "c": "a", "y": 1}
    r = c.post("/v1/ingest", json={"rows": [{**row, "c": {"k": [1]}}, {**row, "c": ["a"]}] + [row] * 4})
    assert r.status_code == 200 and (r.json()["accepted"], r.json()["quarantined"]) == (4, 2), r.text
    assert "field 'c': must be text or a number, not a JSON dict" in r.json()["reasons"][0]
    refused(c.post("/v1/predict", json={"rows": [{**row, "c": ["a"]}]}), 422,
            "row 0: field 'c': must be text or a number, not a JSON list")
    still_serving(c)


def test_malicious_extra_json_columns_are_kept_and_named(served: tuple[httpx.Client, LoopService]) -> None:
    c, service = served
    row = {"x1": 0.1, "x2": 0.2, "c": "a", "y": 1, "note": "from the mobile app"}
    r = c.post("/v1/ingest", json={"rows": [row]})
    assert r.status_code == 200, r.text
    assert any("'note'" in w and "kept in the batch's submission" in w for w in r.json()["warnings"]), r.json()
    batch = service.loop.data.meta.batches.get(r.json()["batch_id"])
    assert batch.raw_path is not None
    assert json.loads(service.loop.data.blobs.get_bytes(batch.raw_path)) == [row]  # the rows as they were sent
    still_serving(c)



def test_malicious_value_that_overflows_a_model_is_quarantined_and_the_loop_trains_on(
        served: tuple[httpx.Client, LoopService]) -> None:
    """One 1e308 once made every later training run fail ('Input X contains NaN') while it stayed in the
    window: now it is quarantined with the rule, and the next run trains."""
    c, _ = served
    rows = records(make_frame(200, seed=11), True)
    rows[5]["x2"] = 1e308
    r = send(c, "/v1/ingest", {"rows": rows, "batch_id": "overflow"})
    assert r.status_code == 200 and (r.json()["accepted"], r.json()["quarantined"]) == (199, 1), r.text
    assert r.json()["reasons"] == ["field 'x2': must lie within ±1e+38, as larger values overflow a model's "
                                   "arithmetic (got 1e+308)"]
    tick = c.post("/v1/tick").json()
    assert tick["run_failed"] is False, tick


# -- a property-based fuzzer against the OpenAPI schema -----------------------------------------------------

OP_TOKEN = "op-" + "f" * 20


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server with tokens and a champion, and its OpenAPI schema as schemathesis reads it."""
    import schemathesis

    spec = write_spec(tmp_path_factory.mktemp("fuzz"))
    settings = Settings(spec_path=spec, tick_every=0, max_body_bytes=LIMIT, tokens={OP_TOKEN: "operator"})
    server = BackgroundServer(create_app(settings, service=LoopService(settings)))
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {OP_TOKEN}"}) as c:
        assert c.post("/v1/ingest", json={"rows": records(make_frame(400), True)}).status_code == 200
        assert c.post("/v1/tick").status_code == 200
    yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    server.stop()


def fuzz(operation: Any, mode: str, tried: dict[str, int]) -> Any:
    """A Hypothesis test of one operation: bounded examples, each called with an operator token; no answer
    may be a 500, and every answer must be a status the schema documents."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)  # the same examples in every CI run; a wider search is a seed away
    @given(case=operation.as_strategy(GenerationMode(mode)))
    def call(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {OP_TOKEN}"})
        tried[operation.label] = tried.get(operation.label, 0) + 1
        what = (case.method, case.formatted_path, repr(case.body)[:300], case.query, response.status_code,
                response.text[:300])
        assert response.status_code < 500, what
        assert str(response.status_code) in operation.definition.raw["responses"], what

    return call


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_server_error(fuzzed: Any, mode: str) -> None:
    """Valid (positive) and invalid (negative) requests by the schema, for every operation."""
    from hypothesis.errors import Unsatisfiable

    tried: dict[str, int] = {}
    for result in fuzzed.get_all_operations():
        operation = result.ok()
        try:
            fuzz(operation, mode, tried)()
        except Unsatisfiable:  # no invalid request exists for an operation without parameters or body
            assert mode == "negative", operation.label
    assert len(tried) >= (12 if mode == "positive" else 6) and sum(tried.values()) >= 100, tried
    print(f"schemathesis {mode}: {sum(tried.values())} requests over {len(tried)} operations, no server error")


def test_malicious_upload_errors_name_no_server_path(served: tuple[httpx.Client, LoopService]) -> None:
    """An upload is written to a temporary file to be read: an error about it speaks of the body the client sent,
    never of a path on the server."""
    c, _ = served
    for body, kind in ((b"", "text/csv"), (b"PAR1 not parquet", "application/vnd.apache.parquet"),
                       (b'"just text"', "application/json")):
        r = c.post("/v1/ingest/file", content=body, headers={"Content-Type": kind})
        assert 400 <= r.status_code < 500, (kind, r.text)
        assert "/tmp" not in r.text and "upload" not in r.text.replace("the uploaded body", ""), r.text

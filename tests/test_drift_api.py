from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from aiohttp import FormData, web
from blockbuster import blockbuster_ctx

from node_exporter_ml.drift import Table, evaluate
from node_exporter_ml.drift.bodies import Limits
from node_exporter_ml.drift.openapi import openapi_document
from node_exporter_ml.drift.service import DriftService
from node_exporter_ml.drift.store import Window
from tests.drift_helpers import app_for, make_rows

LIMITS = Limits(max_body_bytes=2 * 1024 * 1024, max_rows=3000, max_columns=20)


@pytest.fixture
def strict_blockbuster():
    # Anything blocking (file, socket, sqlite, sleep) on the event loop fails the test.
    with blockbuster_ctx() as bb:
        yield bb


@pytest.fixture
async def service(tmp_path: Path):
    svc = DriftService(
        str(tmp_path / "state"), interval=3600, window=Window(rows=500), limits=LIMITS
    )
    await svc.start(run_loop=False)
    yield svc
    await svc.stop()


@pytest.fixture
async def client(aiohttp_client, service, strict_blockbuster):
    return await aiohttp_client(app_for(service))


def columns_of(rows, drop=("prediction", "confidence", "id")):
    names = [k for k in rows[0] if k not in drop]
    return {k: [r[k] for r in rows] for k in names}


def to_csv(rows) -> bytes:
    names = [k for k in rows[0] if k not in ("prediction", "confidence", "id")]
    lines = [",".join(names)] + [",".join(str(r[k]) for k in names) for r in rows]
    return ("\n".join(lines) + "\n").encode()


async def test_evaluate_json_matches_the_engine(client):
    ref, cur = make_rows(400, seed=1), make_rows(400, shift=0.8, seed=2)
    body = {
        "reference": {"columns": columns_of(ref)},
        "current": {
            "rows": [
                {k: v for k, v in r.items() if k in ("amount", "country", "items")} for r in cur
            ]
        },
    }
    resp = await client.post("/api/v1/drift/evaluate", json=body)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    expected = evaluate(body["reference"], body["current"])
    assert report["columns"] == json.loads(json.dumps(expected["columns"]))
    assert report["dataset"] == expected["dataset"]
    assert report["columns"]["amount"]["stattest"] == "ks"
    assert report["columns"]["amount"]["drift_detected"] is True
    assert report["columns"]["country"]["drift_detected"] is True


async def test_evaluate_multipart_csv_types_as_csv(client):
    ref, cur = make_rows(300, seed=3), make_rows(300, seed=4)
    form = FormData()
    form.add_field("reference", to_csv(ref), filename="ref.csv", content_type="text/csv")
    form.add_field("current", to_csv(cur), filename="cur.csv", content_type="text/csv")
    form.add_field("options", json.dumps({"drift_share": 0.3}))
    resp = await client.post("/api/v1/drift/evaluate", data=form)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    # In a thread: the first Table.from_csv imports pandas (file reads the loop guard refuses).
    expected = await asyncio.to_thread(
        lambda: evaluate(Table.from_csv(to_csv(ref)), Table.from_csv(to_csv(cur)), drift_share=0.3)
    )
    assert report["dataset"] == expected["dataset"]
    assert report["dataset"]["drift_share"] == 0.3
    assert report["columns"]["amount"]["drift_detected"] is False
    assert report["columns"]["items"]["column_type"] == "num"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b'{"reference": ', "application/json", 400, "malformed JSON"),
        (b"", "application/json", 400, "body is empty"),
        (b"\xff\xfe\xfd", "application/json", 400, "malformed JSON"),
        (b"[1, 2]", "application/json", 400, "must be a JSON object"),
        (b'{"reference": {"columns": {"a": [1]}}}', "application/json", 400, "current is missing"),
        (
            b'{"reference": [1], "current": {"columns": {"a": [1]}}}',
            "application/json",
            400,
            "reference",
        ),
        (
            b'{"reference": {"columns": {"a": [1, 2]}}, "current": {"columns": {"a": [{"x": 1}]}}}',
            "application/json",
            400,
            "current",
        ),
        (
            b'{"reference": {"columns": {"a": [1, 2]}}, "current": {"columns": {"a": [1]}},'
            b' "options": {"method": "nope"}}',
            "application/json",
            400,
            "nope",
        ),
        (
            b'{"reference": {"columns": {"a": [1]}}, "current": {"columns": {"a": [1]}}, "x": 1}',
            "application/json",
            400,
            "unknown key 'x'",
        ),
        (b"a,b\n1,2\n", "text/csv", 415, "Content-Type"),
    ],
    ids=[
        "truncated JSON",
        "empty body",
        "not UTF-8",
        "not an object",
        "missing current",
        "reference not a table",
        "object cell",
        "unknown test",
        "unknown key",
        "CSV without multipart",
    ],
)
async def test_evaluate_rejects_bad_requests(client, body, content_type, status, needle):
    resp = await client.post(
        "/api/v1/drift/evaluate", data=body, headers={"Content-Type": content_type}
    )
    assert resp.status == status
    payload = await resp.json()
    assert needle in payload["error"]


async def test_limits_answer_413(client):
    too_long = {
        "reference": {"columns": {"a": list(range(LIMITS.max_rows + 1))}},
        "current": {"columns": {"a": [1, 2]}},
    }
    resp = await client.post("/api/v1/drift/evaluate", json=too_long)
    assert resp.status == 413
    assert "too many rows" in (await resp.json())["error"]
    too_wide = {
        "reference": {"columns": {f"c{i}": [1] for i in range(LIMITS.max_columns + 1)}},
        "current": {"columns": {"a": [1]}},
    }
    resp = await client.post("/api/v1/drift/evaluate", json=too_wide)
    assert resp.status == 413
    assert "too many columns" in (await resp.json())["error"]
    huge = b'{"reference": "' + b"x" * LIMITS.max_body_bytes + b'"}'
    # With a Content-Length (refused before reading) and chunked (refused while reading).
    resp = await client.post(
        "/api/v1/drift/evaluate",
        data=io.BytesIO(huge),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert "limit" in (await resp.json())["error"]

    async def chunks():
        for i in range(0, len(huge), 1 << 16):
            yield huge[i : i + (1 << 16)]

    resp = await client.post(
        "/api/v1/drift/evaluate", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert "over the limit" in (await resp.json())["error"]


async def test_multipart_missing_file_and_extra_field(client):
    form = FormData()
    form.add_field("reference", b"a\n1\n", filename="r.csv")
    resp = await client.post("/api/v1/drift/evaluate", data=form)
    assert resp.status == 400
    assert "'current' is missing" in (await resp.json())["error"]
    form = FormData()
    form.add_field("reference", b"a\n1\n", filename="r.csv")
    form.add_field("other", b"a\n1\n", filename="o.csv")
    resp = await client.post("/api/v1/drift/evaluate", data=form)
    assert resp.status == 400
    assert "unexpected multipart field 'other'" in (await resp.json())["error"]
    form = FormData()
    form.add_field("reference", b"a,b\n1,2,3\n", filename="r.csv")
    form.add_field("current", b"a,b\n1,2\n", filename="c.csv")
    resp = await client.post("/api/v1/drift/evaluate", data=form)
    assert resp.status == 400
    assert "reference: CSV line 2" in (await resp.json())["error"]


async def test_model_names_and_unknown_models(client):
    resp = await client.put("/api/v1/models/bad%20name/reference", json={"columns": {"a": [1]}})
    assert resp.status == 400
    assert "bad model name" in (await resp.json())["error"]
    resp = await client.put("/api/v1/models/.hidden/reference", json={"columns": {"a": [1]}})
    assert resp.status == 400
    resp = await client.put(f"/api/v1/models/{'m' * 129}/reference", json={"columns": {"a": [1]}})
    assert resp.status == 400
    for method, path, body in (
        ("POST", "/api/v1/models/nope/observations", {"rows": [{"a": 1}]}),
        ("POST", "/api/v1/models/nope/labels", {"labels": [{"id": "1", "label": 1}]}),
        ("GET", "/api/v1/models/nope/drift", None),
        ("DELETE", "/api/v1/models/nope", None),
    ):
        resp = await client.request(method, path, json=body)
        assert resp.status == 404, path
        assert "unknown model 'nope'" in (await resp.json())["error"]


async def test_observation_validation(client):
    resp = await client.put("/api/v1/models/m/reference", json={"rows": make_rows(50)})
    assert resp.status == 201
    for body, needle in (
        ({"rows": [{"a": [1]}]}, "row 0: 'a' must be"),
        ({"rows": [{"a": 1, "confidence": 2}]}, "confidence must be a number from 0 to 1"),
        ({"rows": [{"a": 1, "confidence": True}]}, "confidence"),
        ({"rows": [{"a": 1, "id": 1.5}]}, "id must be a string or an integer"),
        ({"rows": [{"a": 1, "id": ""}]}, "id must be 1-256 characters"),
        ({"rows": [{"a": 1, "prediction": {"x": 1}}]}, "prediction must be"),
        ({"rows": [1]}, "row 0 is not an object"),
        ({"rows": {"a": 1}}, "rows must be a list"),
        ({"columns": {"a": [1, 2], "b": [1]}}, "same number of values"),
        ({"rows": [], "columns": {}}, "body must be"),
    ):
        resp = await client.post("/api/v1/models/m/observations", json=body)
        assert resp.status == 400, body
        assert needle in (await resp.json())["error"], body
    resp = await client.post(
        "/api/v1/models/m/observations", json={"rows": [{"a": 1}] * (LIMITS.max_rows + 1)}
    )
    assert resp.status == 413


async def test_label_validation(client):
    await client.put("/api/v1/models/m/reference", json={"rows": make_rows(50)})
    for body, needle in (
        ({"labels": [{"label": 1}]}, "id is required"),
        ({"labels": [{"id": "a"}]}, "label must be"),
        ({"labels": [{"id": "a", "label": None}]}, "label must be"),
        ({"labels": [{"id": "a", "label": 1, "x": 2}]}, "unknown key 'x'"),
        ({"labels": "a"}, "body must be"),
    ):
        resp = await client.post("/api/v1/models/m/labels", json=body)
        assert resp.status == 400, body
        assert needle in (await resp.json())["error"], body


async def test_model_lifecycle_report(client, service):
    ref = make_rows(800, seed=5)
    resp = await client.put("/api/v1/models/fraud-v1/reference", json={"rows": ref})
    assert resp.status == 201
    assert (await resp.json()) == {"model": "fraud-v1", "version": 1, "rows": 800, "columns": 5}
    resp = await client.put("/api/v1/models/fraud-v1/reference", json={"rows": ref})
    assert resp.status == 200
    assert (await resp.json())["version"] == 2
    # 600 shifted rows: the window (500 rows) holds the newest 500.
    cur = make_rows(600, shift=1.5, seed=6, ids=True)
    resp = await client.post("/api/v1/models/fraud-v1/observations", json={"rows": cur})
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 600
    # Late labels for the last 200 rows: truth says "fraud" above 1.2.
    labels = [{"id": r["id"], "label": "fraud" if r["amount"] > 1.2 else "ok"} for r in cur[-200:]]
    labels.append({"id": "never-seen", "label": "ok"})
    resp = await client.post("/api/v1/models/fraud-v1/labels", json={"labels": labels})
    assert resp.status == 200
    assert (await resp.json()) == {"model": "fraud-v1", "stored": 201, "matched": 200}

    resp = await client.get("/api/v1/models/fraud-v1/drift")
    assert resp.status == 200
    report = await resp.json()
    assert report["window"] == {
        "kind": "rows",
        "size": 500,
        "rows": 500,
        "first_at": report["window"]["first_at"],
        "last_at": report["window"]["last_at"],
    }
    window_feats = [{k: r[k] for k in ("amount", "country", "items")} for r in cur[-500:]]
    ref_feats = {k: [r[k] for r in ref] for k in ("amount", "country", "items")}
    expected = evaluate(ref_feats, {"rows": window_feats})
    assert report["dataset"] == expected["dataset"]
    assert report["columns"]["amount"] == json.loads(json.dumps(expected["columns"]["amount"]))
    assert report["dataset"]["dataset_drift"] is True
    assert set(report["columns"]) == {"amount", "country", "items"}
    assert report["data_quality"]["columns"]["country"]["unseen_categories"] == ["jp"]
    # Predictions: the reference has a prediction column, so prediction drift is tested.
    assert report["prediction"]["drift"]["drift_detected"] is True
    assert report["prediction"]["confidence"]["count"] == 500
    assert report["prediction"]["reference_confidence"]["count"] == 800
    # Labels: accuracy over the 200 matched, computed by hand.
    truth = [("fraud" if r["amount"] > 1.2 else "ok", r["prediction"]) for r in cur[-200:]]
    acc = sum(a == p for a, p in truth) / 200
    assert report["labels"]["count"] == 200
    assert report["labels"]["accuracy"] == pytest.approx(acc)
    assert report["labels"]["unmatched"] == 1
    tp = sum(a == p == "fraud" for a, p in truth)
    assert report["labels"]["classes"]["fraud"]["precision"] == pytest.approx(
        tp / sum(p == "fraud" for _, p in truth)
    )
    assert report["labels"]["classes"]["fraud"]["recall"] == pytest.approx(
        tp / sum(a == "fraud" for a, _ in truth)
    )
    cells = {(c["actual"], c["predicted"]): c["count"] for c in report["labels"]["confusion"]}
    assert sum(cells.values()) == 200
    assert cells[("ok", "fraud")] == sum(a == "ok" and p == "fraud" for a, p in truth)

    # Cached until the data changes; a new observation makes a new evaluation.
    again = await (await client.get("/api/v1/models/fraud-v1/drift")).json()
    assert again["evaluated_at"] == report["evaluated_at"]
    await client.post("/api/v1/models/fraud-v1/observations", json={"rows": cur[:1]})
    fresh = await (await client.get("/api/v1/models/fraud-v1/drift")).json()
    assert fresh["evaluated_at"] > report["evaluated_at"]

    resp = await client.get("/api/v1/models")
    assert (await resp.json()) == {"models": ["fraud-v1"]}
    resp = await client.delete("/api/v1/models/fraud-v1")
    assert resp.status == 200
    assert (await (await client.get("/api/v1/models")).json()) == {"models": []}


async def test_reference_as_csv_and_options(client):
    ref = make_rows(300, seed=7)
    csv_bytes = to_csv(ref)
    resp = await client.put(
        "/api/v1/models/c/reference", data=csv_bytes, headers={"Content-Type": "text/csv"}
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["columns"] == 3
    form = FormData()
    form.add_field("reference", csv_bytes, filename="r.csv", content_type="text/csv")
    form.add_field("options", json.dumps({"num_method": "psi", "ranges": {"amount": [-3, 3]}}))
    resp = await client.put("/api/v1/models/c/reference", data=form)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/v1/models/c/observations", json={"rows": make_rows(100, seed=8)})
    assert resp.status == 200
    report = await (await client.get("/api/v1/models/c/drift")).json()
    assert report["columns"]["amount"]["stattest"] == "psi"
    assert report["data_quality"]["columns"]["amount"]["range"] == [-3, 3]
    # Bad options are refused when the reference is stored, not at the first evaluation.
    resp = await client.put(
        "/api/v1/models/c/reference",
        json={"columns": {"a": [1.0, 2.0]}, "options": {"num_method": "bogus"}},
    )
    assert resp.status == 400
    assert "bogus" in (await resp.json())["error"]


async def test_empty_window_and_schema_change(client):
    await client.put("/api/v1/models/m/reference", json={"rows": make_rows(50)})
    report = await (await client.get("/api/v1/models/m/drift")).json()
    assert report["dataset"] is None
    assert report["error"] == "no observations in the window"
    rows = [{"other": 1.0 * i} for i in range(20)]
    await client.post("/api/v1/models/m/observations", json={"rows": rows})
    report = await (await client.get("/api/v1/models/m/drift")).json()
    assert report["dataset"] is None
    assert "no column" in report["error"]
    schema = report["data_quality"]["schema"]
    assert set(schema["missing_columns"]) == {"amount", "country", "items"}
    assert schema["extra_columns"] == ["other"]


@pytest.fixture
async def token_client(aiohttp_client, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with blockbuster_ctx():
        svc = DriftService(str(tmp_path / "state2"), interval=3600, token_file=str(token))
        await svc.start(run_loop=False)
        yield await aiohttp_client(app_for(svc))
        await svc.stop()


async def test_write_endpoints_need_the_token(token_client):
    body = {"rows": make_rows(20)}
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic czNjcmV0"}, 401),
        ({"Authorization": "Bearer s3cret"}, 201),
    ):
        resp = await token_client.put("/api/v1/models/m/reference", json=body, headers=headers)
        assert resp.status == status
        if status == 401:
            assert "token" in (await resp.json())["error"]
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await token_client.post("/api/v1/models/m/observations", json=body)
    assert resp.status == 401
    resp = await token_client.post(
        "/api/v1/drift/evaluate", json={"reference": body, "current": body}
    )
    assert resp.status == 401
    # Reads stay open.
    assert (await token_client.get("/api/v1/models/m/drift")).status == 200
    assert (await token_client.get("/drift/m")).status == 200


async def test_empty_token_file_refuses_to_start(tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    svc = DriftService(str(tmp_path / "s"), token_file=str(token))
    with pytest.raises(Exception, match=r"token-file.*empty"):
        await svc.start(run_loop=False)


async def test_openapi_documents_every_route(client, service):
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc == openapi_document()
    assert doc["openapi"].startswith("3.")
    app = web.Application()
    from node_exporter_ml.drift.web import routes

    served = {
        (r.method.lower(), r.path)
        for r in routes(service)
        if r.path.startswith("/api/v1/models") or r.path == "/api/v1/drift/evaluate"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    del app


async def test_page_unknown_and_bad_names(client):
    resp = await client.get("/drift/nope")
    assert resp.status == 404
    assert "Unknown model" in await resp.text()
    resp = await client.get("/drift/..%2F")
    assert resp.status in (400, 404)


async def test_truncated_body_is_a_client_error(client, caplog):
    await client.put("/api/v1/models/m/reference", json={"rows": make_rows(50)})
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /api/v1/models/m/observations HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"rows": [{"a": 1}'
    )
    await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert not any(r.levelname == "ERROR" for r in caplog.records), caplog.text
    if answer:  # aiohttp may also just drop a connection whose body never came
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


async def test_time_window(aiohttp_client, tmp_path):
    svc = DriftService(str(tmp_path / "s"), window=Window(rows=50, seconds=3600.0, max_rows=500))
    await svc.start(run_loop=False)
    try:
        client = await aiohttp_client(app_for(svc))
        await client.put("/api/v1/models/t/reference", json={"rows": make_rows(200)})
        await client.post("/api/v1/models/t/observations", json={"rows": make_rows(120, seed=3)})
        report = await (await client.get("/api/v1/models/t/drift")).json()
        # A time window is not cut at `rows`: all 120 fit in the hour.
        assert report["window"]["kind"] == "time"
        assert report["window"]["size"] == 3600.0
        assert report["window"]["rows"] == 120
        # Time windows are evaluated on every request (time moves on even without data).
        again = await (await client.get("/api/v1/models/t/drift")).json()
        assert again["evaluated_at"] > report["evaluated_at"]
    finally:
        await svc.stop()


async def test_numerical_work_runs_in_the_worker_process(client, service, monkeypatch):
    import os

    import node_exporter_ml.drift.service as service_module

    seen: list[int] = []
    real_build, real_evaluate = service_module.build_report, service.__class__._evaluate

    def build(*args, **kwargs):
        seen.append(os.getpid())
        return real_build(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        seen.append(os.getpid())
        return real_evaluate(self, *args, **kwargs)

    # Patched in this (the agent's) process only: a call made here would be recorded.
    monkeypatch.setattr(service_module, "build_report", build)
    monkeypatch.setattr(service.__class__, "_evaluate", evaluate)
    body = {"reference": {"rows": make_rows(30)}, "current": {"rows": make_rows(30, seed=9)}}
    assert (await client.post("/api/v1/drift/evaluate", json=body)).status == 200
    await client.put("/api/v1/models/m/reference", json={"rows": make_rows(30)})
    await client.post("/api/v1/models/m/observations", json={"rows": make_rows(30, seed=2)})
    resp = await client.get("/api/v1/models/m/drift")
    assert resp.status == 200
    assert (await resp.json())["columns"]["amount"]["stattest"] == "ks"
    assert seen == []
    assert service.pool is not None
    workers = service.pool.pids()
    assert workers
    assert os.getpid() not in workers


async def test_unroutable_model_names_get_json_errors(client):
    # Found by the fuzz run: a newline in the path escaped the /api/v1 catch-all.
    for path in ("/api/v1/models/%0A%7B/observations", "/api/v1/models/%0A/drift", "/api/v1/%0A"):
        resp = await client.post(path, json={"rows": []})
        assert 400 <= resp.status < 500
        assert isinstance((await resp.json())["error"], str)

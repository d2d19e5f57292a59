"""Model tasks: regression quality, task validation, macro scores and calibration series."""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
from blockbuster import blockbuster_ctx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.drift import drift_families
from node_exporter_ml.drift import Table, evaluate
from node_exporter_ml.drift.bodies import Limits
from node_exporter_ml.drift.engine.errors import OptionsError
from node_exporter_ml.drift.engine.labels import prediction_drift, prediction_summary
from node_exporter_ml.drift.engine.regression import (
    first_non_number,
    regression_quality,
    split_task,
)
from node_exporter_ml.drift.store import Window
from tests.drift_helpers import app_for, make_rows, running_service

# --- pure parts ----------------------------------------------------------------------------


def test_split_task():
    assert split_task({}) == ("classification", {})
    assert split_task({"task": None, "drift_share": 0.3}) == (
        "classification",
        {"drift_share": 0.3},
    )
    assert split_task({"task": "regression"}) == ("regression", {})
    for bad in ("Regression", "ranking", 1, ["regression"], True):
        with pytest.raises(OptionsError, match="option 'task' must be one of"):
            split_task({"task": bad})


def test_first_non_number():
    assert first_non_number([1, 2.5, None, -3, 0]) is None
    assert first_non_number([1, "2", 3]) == (1, "2")
    assert first_non_number([True]) == (0, True)
    assert first_non_number([1.0, math.inf]) == (1, math.inf)
    assert first_non_number([math.nan]) is not None
    assert first_non_number([1, 10**400]) == (1, 10**400)  # beyond a float: not an error


def test_regression_quality_by_hand():
    pairs = [(10.0, 12.0), (4.0, 3.0), (0.0, 0.5), (2, 2), ("x", 1.0), (1.0, None), (3.0, True)]
    out = regression_quality(pairs)
    assert out["count"] == 4
    assert out["skipped"] == 2  # the string label and the bool prediction; no prediction: left out
    errors = [2.0, -1.0, 0.5, 0.0]
    assert out["mean_error"] == pytest.approx(sum(errors) / 4)
    assert out["mae"] == pytest.approx(3.5 / 4)
    assert out["rmse"] == pytest.approx(math.sqrt(5.25 / 4))
    assert out["max_abs_error"] == 2.0
    # |e| / label, and the label at 0 counts as 1
    assert out["mape_ratio"] == pytest.approx((0.2 + 0.25 + 1.0 + 0.0) / 4)
    labels = np.array([10.0, 4.0, 0.0, 2.0])
    assert out["r2"] == pytest.approx(1 - 5.25 / float(np.sum((labels - labels.mean()) ** 2)))
    assert out["error_histogram"]["counts"][0] == 1  # -1 is the smallest error
    assert sum(out["error_histogram"]["counts"]) == 4
    grid = out["predicted_vs_actual"]
    assert len(grid["edges"]) == 21
    assert grid["edges"][0] == 0.0
    assert grid["edges"][-1] == 12.0
    assert sum(c[2] for c in grid["cells"]) == 4
    assert [19, 19, 0] not in grid["cells"]


def test_mape_of_a_window_whose_labels_are_all_zero():
    # Evidently 0.7.23 fails on such a window (IndexError in its dummy MAPE); every pair counts
    # as an error of 100%, whatever the prediction.
    out = regression_quality([(0.0, 1.0), (0, 0.5), (-0.0, 0.0), (1e-17, 3.0)])
    assert out["mape_ratio"] == 1.0
    assert out["mae"] == pytest.approx(4.5 / 4)


def test_regression_quality_with_hostile_values():
    assert regression_quality([]) == regression_quality([("a", "b")]) | {"skipped": 0}
    out = regression_quality([(1e308, -1e308), (-1e308, 1e308), (0.0, 5.0)])
    assert out["count"] == 3
    assert out["mae"] is None  # the errors overflow: no number rather than inf
    assert out["r2"] is None
    edges = out["predicted_vs_actual"]["edges"]
    assert all(math.isfinite(e) for e in edges)
    assert edges == sorted(edges)
    out = regression_quality([(math.inf, 1.0), (1.0, math.nan), (2.0, 2.0)])
    assert out["count"] == 1
    assert out["skipped"] == 2
    assert out["mae"] == 0.0
    assert out["r2"] is None  # under two pairs
    json.dumps(out, allow_nan=False)


def test_numerical_predictions_summary_and_drift():
    few = [1, 2, 3, 1, 2, 3]
    assert prediction_summary(few)["kind"] == "cat"
    summary = prediction_summary(few, numerical=True)
    assert summary["kind"] == "num"
    assert summary["mean"] == 2.0
    # Integer predictions with few values: a classifier's are classes (chi-square on labels),
    # a regressor's are a numerical column (the numerical choice: K-S above 5 values).
    rng = random.Random(3)
    ref = [rng.randint(0, 7) for _ in range(300)]
    cur = [rng.randint(1, 8) for _ in range(300)]
    as_classes = prediction_drift(ref, cur, evaluate, Table.from_columns)
    as_numbers = prediction_drift(ref, cur, evaluate, Table.from_columns, numerical=True)
    assert as_classes is not None
    assert as_numbers is not None
    assert (as_classes["column_type"], as_classes["stattest"]) == ("cat", "chisquare")
    assert (as_numbers["column_type"], as_numbers["stattest"]) == ("num", "ks")
    direct = evaluate(
        {"prediction": [float(v) for v in ref]}, {"prediction": [float(v) for v in cur]}
    )
    assert as_numbers["score"] == direct["columns"]["prediction"]["score"]


# --- through the API ---------------------------------------------------------------------

LIMITS = Limits(max_body_bytes=2 * 1024 * 1024, max_rows=3000, max_columns=20)


@pytest.fixture
async def service(tmp_path: Path):
    state = str(tmp_path / "state")
    async with running_service(state, interval=3600, window=Window(rows=500), limits=LIMITS) as svc:
        yield svc


@pytest.fixture
async def client(aiohttp_client, service):
    with blockbuster_ctx():
        yield await aiohttp_client(app_for(service))


def eta_rows(n: int, *, seed: int, shift: float = 0.0, ids: bool = False) -> list[dict]:
    """A regressor's traffic: an ETA in minutes predicted from a distance."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        km = rng.uniform(1.0, 20.0) + shift
        row = {"km": km, "zone": rng.choice(["a", "b", "c"]), "prediction": round(3.0 * km, 3)}
        if ids:
            row["id"] = f"t{i}"
        rows.append(row)
    return rows


async def post_json(client, path: str, body, method: str = "post"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await getattr(client, method)(
        path, data=data, headers={"Content-Type": "application/json"}
    )
    return resp.status, await resp.json()


async def test_regression_model_from_reference_to_metrics(client):
    ref = eta_rows(400, seed=1)
    status, body = await post_json(
        client,
        "/api/v1/models/eta/reference",
        {"rows": ref, "options": {"task": "regression"}},
        "put",
    )
    assert status == 201, body
    cur = eta_rows(300, seed=2, shift=3.0, ids=True)
    status, body = await post_json(client, "/api/v1/models/eta/observations", {"rows": cur})
    assert status == 200, body
    rng = random.Random(4)
    truth = {r["id"]: r["prediction"] + rng.gauss(2.0, 4.0) for r in cur[:200]}
    truth["t0"] = 0  # an integer label at 0
    labels = [{"id": k, "label": v} for k, v in truth.items()]
    status, body = await post_json(client, "/api/v1/models/eta/labels", {"labels": labels})
    assert (status, body["matched"]) == (200, 200)

    resp = await client.get("/api/v1/models/eta/drift")
    report = await resp.json()
    assert report["reference"]["task"] == "regression"
    lab = report["labels"]
    assert lab["task"] == "regression"
    assert lab["count"] == 200
    assert "accuracy" not in lab
    want = regression_quality([(truth[r["id"]], r["prediction"]) for r in cur[:200]])
    for key in ("mean_error", "mae", "rmse", "mape_ratio", "r2", "max_abs_error"):
        assert lab[key] == pytest.approx(want[key], rel=1e-12), key
    errors = np.array([r["prediction"] - truth[r["id"]] for r in cur[:200]])
    assert lab["mae"] == pytest.approx(float(np.mean(np.abs(errors))))
    assert sum(lab["error_histogram"]["counts"]) == 200
    # Predictions are numbers: summarised and tested as a numerical column.
    assert report["prediction"]["summary"]["kind"] == "num"
    drift = report["prediction"]["drift"]
    assert (drift["column_type"], drift["stattest"], drift["drift_detected"]) == ("num", "ks", True)

    fams = await asyncio.to_thread(render_and_check, report)
    assert fams["nodeml_drift_regression_mae"] == pytest.approx(lab["mae"])
    assert fams["nodeml_drift_regression_mean_error"] == pytest.approx(lab["mean_error"])
    assert fams["nodeml_drift_regression_rmse"] == pytest.approx(lab["rmse"])
    assert fams["nodeml_drift_regression_mape_ratio"] == pytest.approx(lab["mape_ratio"])
    assert fams["nodeml_drift_regression_r2"] == pytest.approx(lab["r2"])
    assert fams["nodeml_drift_regression_max_abs_error"] == pytest.approx(lab["max_abs_error"])
    assert "nodeml_drift_accuracy_ratio" not in fams
    assert "nodeml_drift_f1_macro_ratio" not in fams

    page = await (await client.get("/drift/eta")).text()
    assert "Predicted vs actual" in page
    assert "Error (prediction - label)" in page


async def test_classifier_exports_macro_scores_and_calibration(client):
    ref = make_rows(300, seed=1)
    status, _ = await post_json(client, "/api/v1/models/shop/reference", {"rows": ref}, "put")
    assert status == 201
    cur = make_rows(200, seed=2, ids=True)
    await post_json(client, "/api/v1/models/shop/observations", {"rows": cur})
    labels = [{"id": r["id"], "label": "fraud" if r["amount"] > 0.8 else "ok"} for r in cur]
    await post_json(client, "/api/v1/models/shop/labels", {"labels": labels})
    report = await (await client.get("/api/v1/models/shop/drift")).json()
    lab = report["labels"]
    assert lab["task"] == "classification"
    assert report["reference"]["task"] == "classification"
    classes = lab["classes"]
    assert lab["precision_macro"] == pytest.approx(
        (classes["fraud"]["precision"] + classes["ok"]["precision"]) / 2
    )
    assert lab["recall_macro"] == pytest.approx(
        (classes["fraud"]["recall"] + classes["ok"]["recall"]) / 2
    )
    cal = lab["calibration"]
    assert cal["count"] == 200
    want = (
        sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in cal["bins"] if b["count"])
        / 200
    )
    assert cal["error"] == pytest.approx(want)
    fams = await asyncio.to_thread(render_and_check, report)
    assert fams["nodeml_drift_precision_macro_ratio"] == pytest.approx(lab["precision_macro"])
    assert fams["nodeml_drift_recall_macro_ratio"] == pytest.approx(lab["recall_macro"])
    assert fams["nodeml_drift_f1_macro_ratio"] == pytest.approx(lab["f1_macro"])
    assert fams["nodeml_drift_calibration_error_ratio"] == pytest.approx(cal["error"])
    assert not any(name.startswith("nodeml_drift_regression_") for name in fams)
    page = await (await client.get("/drift/shop")).text()
    assert "macro F1" in page
    assert "calibration error" in page


def render_and_check(report: dict) -> dict[str, float]:
    """The model's one-sample series, after `promtool check metrics` found nothing to say."""
    from node_exporter_ml.drift.service import ModelResult

    result = ModelResult("m", (1, 1, 1), 1.0, 0.1, report)

    class Families:
        def collect(self):
            return drift_families([result])

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    text = generate_latest(registry)
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"", proc.stdout
    assert proc.stderr.strip() == b"", proc.stderr
    return {
        f.name: f.samples[0].value
        for f in text_string_to_metric_families(text.decode())
        if len(f.samples) == 1 and f.samples[0].labels == {"model": "m"}
    }


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"rows": [{"x": 1.0, "prediction": 2.0}], "options": {"task": "ranking"}},
         "bad options: option 'task' must be one of 'classification', 'regression'"),
        ({"rows": [{"x": 1.0, "prediction": 2.0}, {"x": 2.0, "prediction": "high"}],
          "options": {"task": "regression"}},
         "reference: row 1: prediction must be a finite number for a regression model, not 'high'"),
        ({"rows": [{"x": 1.0, "prediction": True}], "options": {"task": "regression"}},
         "not True"),
    ],
    ids=["unknown task", "string prediction", "bool prediction"],
)  # fmt: skip
async def test_reference_task_is_checked(client, body, needle):
    status, answer = await post_json(client, "/api/v1/models/m/reference", body, "put")
    assert status == 400
    assert needle in answer["error"]


async def test_reference_task_in_csv_checks_infinity(client):
    from aiohttp import FormData

    form = FormData()
    form.add_field("reference", b"x,prediction\n1,2.5\n2,inf\n", filename="r.csv")
    form.add_field("options", json.dumps({"task": "regression"}))
    resp = await client.put("/api/v1/models/m/reference", data=form)
    assert resp.status == 400
    assert "row 1: prediction must be a finite number" in (await resp.json())["error"]
    form = FormData()
    form.add_field("reference", b"x,prediction\n1,2.5\n2,\n3,4\n", filename="r.csv")
    form.add_field("options", json.dumps({"task": "regression"}))
    resp = await client.put("/api/v1/models/m/reference", data=form)
    assert resp.status == 201, await resp.text()  # a missing prediction is allowed


@pytest.mark.parametrize(
    ("path", "raw", "needle"),
    [
        ("observations", b'{"rows": [{"x": 1, "prediction": 2}, {"x": 1, "prediction": "3"}]}',
         "row 1: prediction must be a finite number for a regression model, not '3'"),
        ("observations", b'{"rows": [{"x": 1, "prediction": NaN}]}', "not nan"),
        ("observations", b'{"rows": [{"x": 1, "prediction": Infinity}]}', "not inf"),
        ("observations", b'{"rows": [{"x": 1, "prediction": 1e999}]}', "not inf"),
        ("observations", b'{"rows": [{"x": 1, "prediction": false}]}', "not False"),
        ("observations", b'{"rows": [{"x": 1, "prediction": 1%s}]}' % (b"0" * 400),
         "not 100000000000000000...0000000000000000000"),
        ("labels", b'{"labels": [{"id": "a", "label": 1.5}, {"id": "b", "label": "late"}]}',
         "label of id 'b' must be a finite number for a regression model, not 'late'"),
        ("labels", b'{"labels": [{"id": "a", "label": -Infinity}]}', "not -inf"),
        ("labels", b'{"labels": [{"id": "a", "label": true}]}', "not True"),
    ],
    ids=["string prediction", "NaN prediction", "Infinity prediction", "overflowing prediction",
         "bool prediction", "huge integer prediction", "string label", "-Infinity label",
         "bool label"],
)  # fmt: skip
async def test_regression_writes_are_checked(client, path, raw, needle):
    body = {"rows": [{"x": 1.0, "prediction": 1.0}], "options": {"task": "regression"}}
    assert (await post_json(client, "/api/v1/models/r/reference", body, "put"))[0] == 201
    status, answer = await post_json(client, f"/api/v1/models/r/{path}", raw)
    assert status == 400
    assert needle in answer["error"]
    # Nothing of a refused batch is stored.
    report = await (await client.get("/api/v1/models/r/drift")).json()
    assert report["window"]["rows"] == 0
    assert report["labels"]["labels"] == 0
    # A classifier takes the same values as classes.
    assert (await post_json(client, "/api/v1/models/c/reference", {"rows": [{"x": 1.0}]}, "put"))[
        0
    ] == 201
    if b"NaN" not in raw and b"Infinity" not in raw and b"1e999" not in raw:
        status, _ = await post_json(client, f"/api/v1/models/c/{path}", raw)
        assert status == 200
        resp = await client.get("/api/v1/models/c/drift")
        assert resp.status == 200, await resp.text()


# --- the example rules ---------------------------------------------------------------------

EXAMPLE_RULES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


@pytest.mark.integration
def test_example_quality_rules_pass_promtool():
    proc = promtool("check", "rules", "model-quality.rules.yml", cwd=EXAMPLE_RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 3 rules found" in proc.stdout
    proc = promtool("test", "rules", "model-quality.rules.test.yml", cwd=EXAMPLE_RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('weighted{model="eta"} > 5', 'weighted{model="eta"} > 7'),
        ("for: 15m", "for: 5m"),
        ("* on (instance, model) nodeml_drift_labeled_observations", ""),
    ],
    ids=["threshold", "duration", "unweighted"],
)
def test_example_quality_rule_tests_can_fail(tmp_path, old, new):
    rules = (EXAMPLE_RULES / "model-quality.rules.yml").read_text()
    assert old in rules
    (tmp_path / "model-quality.rules.yml").write_text(rules.replace(old, new))
    tests = (EXAMPLE_RULES / "model-quality.rules.test.yml").read_text()
    (tmp_path / "model-quality.rules.test.yml").write_text(tests)
    proc = promtool("test", "rules", "model-quality.rules.test.yml", cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout
    # A wrong answer, not a rule that no longer parses.
    assert "got:" in proc.stdout + proc.stderr, proc.stdout + proc.stderr

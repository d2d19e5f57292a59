from __future__ import annotations

import asyncio
import subprocess

import pytest
from aiohttp import web
from blockbuster import blockbuster_ctx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import CollectContext, StartupError
from node_exporter_ml.collectors.drift import DriftCollector, DriftData
from node_exporter_ml.registry import load_collectors
from node_exporter_ml.snapshot import Snapshot
from node_exporter_ml.webguard import AUTH, Authenticator, auth_middleware
from tests.drift_helpers import make_rows
from tests.helpers import make_config, with_options


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def render(collector: DriftCollector, data: DriftData) -> dict[str, list]:
    snapshot = Snapshot(taken_at=0.0, results={})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(collector.families(data, snapshot))))
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def promtool_is_silent(collector: DriftCollector, data: DriftData) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(collector.families(data, Snapshot(0.0, {})))))
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(registry), capture_output=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"", proc.stdout
    assert proc.stderr.strip() == b"", proc.stderr


def value(samples, **labels):
    hits = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (labels, samples)
    return hits[0]


def test_registered_and_enabled_by_default():
    reg = load_collectors()["drift"]
    assert reg.factory is DriftCollector
    assert reg.default_enabled is True


@pytest.fixture
def config(tmp_path):
    return make_config(
        drift_state_dir=str(tmp_path / "state"),
        drift_interval=0.1,
        drift_window_rows=300,
    )


@pytest.mark.parametrize("broken", ["state", "token"])
async def test_start_turns_the_subsystems_errors_into_startup_errors(tmp_path, broken):
    # The store and the service have errors of their own; the agent stops on StartupError.
    state = tmp_path / "state"
    token = tmp_path / "token"
    token.write_text("t\n")
    if broken == "state":
        state.write_text("a file, not a directory")
    else:
        token.write_text("\n")
    config = make_config(drift_state_dir=str(state), drift_token_file=str(token))
    collector = DriftCollector(CollectContext(config))
    flag = "--state.dir" if broken == "state" else "--drift.token-file"
    with pytest.raises(StartupError, match=flag):
        await collector.start()
    await collector.stop()


async def wait_for_result(collector: DriftCollector, model: str, *, rows: int) -> DriftData:
    for _ in range(200):
        data = await collector.update(None)
        if any(
            r.model == model and (r.report.get("window") or {}).get("rows") == rows
            for r in data.results
        ):
            return data
        await asyncio.sleep(0.05)
    raise AssertionError("the evaluation loop produced no result")


async def test_continuous_evaluation_publishes_series(aiohttp_client, config):
    with blockbuster_ctx():
        collector = DriftCollector(CollectContext(config))
        await collector.start()
        try:
            app = web.Application()
            app.add_routes(collector.routes())
            client = await aiohttp_client(app)
            ref = make_rows(600, seed=11)
            assert (
                await client.put("/api/v1/models/fraud/reference", json={"rows": ref})
            ).status == 201
            cur = make_rows(300, shift=2.0, seed=12, ids=True)
            resp = await client.post("/api/v1/models/fraud/observations", json={"rows": cur})
            assert resp.status == 200
            labels = [{"id": r["id"], "label": "fraud"} for r in cur[:50]]
            assert (
                await client.post("/api/v1/models/fraud/labels", json={"labels": labels})
            ).status == 200
            # No GET: the evaluation loop itself picks the new data up.
            data = await wait_for_result(collector, "fraud", rows=300)
            while not any(r.report["labels"]["count"] for r in data.results):
                await asyncio.sleep(0.05)
                data = await collector.update(None)
        finally:
            await collector.stop()
    fams = render(collector, data)
    await asyncio.to_thread(promtool_is_silent, collector, data)
    report = data.results[0].report
    amount = report["columns"]["amount"]
    assert value(fams["nodeml_drift_score"], model="fraud", feature="amount",
                 test=amount["stattest"]) == pytest.approx(amount["score"])  # fmt: skip
    assert value(fams["nodeml_drift_detected"], model="fraud", feature="amount") == 1.0
    assert value(fams["nodeml_dataset_drift_share"], model="fraud") == pytest.approx(
        report["dataset"]["share_of_drifted_columns"]
    )
    assert value(fams["nodeml_dataset_drift_detected"], model="fraud") == 1.0
    assert value(fams["nodeml_drift_window_observations"], model="fraud") == 300
    assert value(fams["nodeml_drift_evaluation_success"], model="fraud") == 1.0
    assert value(fams["nodeml_drift_unseen_categories_ratio"], model="fraud", feature="country") > 0
    assert value(fams["nodeml_drift_missing_ratio"], model="fraud", feature="amount") == 0.0
    assert value(fams["nodeml_drift_prediction_detected"], model="fraud") == 1.0
    assert value(fams["nodeml_drift_prediction_confidence"], model="fraud", le="+Inf") == 300
    assert value(fams["nodeml_drift_prediction_confidence_gcount"], model="fraud") == 300
    acc = sum(r["prediction"] == "fraud" for r in cur[:50]) / 50
    assert value(fams["nodeml_drift_accuracy_ratio"], model="fraud") == pytest.approx(acc)
    assert value(fams["nodeml_drift_labeled_observations"], model="fraud") == 50
    assert value(
        fams["nodeml_drift_recall_ratio"], model="fraud", **{"class": "fraud"}
    ) == pytest.approx(acc)
    assert value(fams["nodeml_drift_confusion_observations"], model="fraud", actual="fraud",
                 predicted="ok") == 50 - round(acc * 50)  # fmt: skip
    for name in fams:
        assert name.startswith("nodeml_")

    # A restart serves the stored result before any new evaluation.
    again = DriftCollector(CollectContext(with_options(config, drift_interval=3600)))
    with blockbuster_ctx():
        await again.start()
        try:
            restored = await again.update(None)
        finally:
            await again.stop()
    assert [r.model for r in restored.results] == ["fraud"]
    assert restored.results[0].report["dataset"] == report["dataset"]


def test_schema_change_and_failed_evaluation_series(config):
    from node_exporter_ml.drift.service import ModelResult

    result = ModelResult(
        model="m",
        version=(1, 1, 0),
        evaluated_at=10.0,
        duration_seconds=0.5,
        report={
            "window": {"rows": 3},
            "columns": {},
            "dataset": None,
            "data_quality": {
                "schema": {"missing_columns": ["a"], "extra_columns": ["b"],
                           "retyped_columns": {"c": {"reference": "number", "current": "string"}}},
                "columns": {"c": {"missing_share": 0.5, "out_of_range_share": None}},
            },
        },
        error="no column can be evaluated",
    )  # fmt: skip
    collector = DriftCollector(CollectContext(config))
    fams = render(collector, DriftData((result,)))
    assert value(fams["nodeml_drift_evaluation_success"], model="m") == 0.0
    changes = {
        (s.labels["feature"], s.labels["change"]) for s in fams["nodeml_drift_schema_change"]
    }
    assert changes == {("a", "missing"), ("b", "extra"), ("c", "retyped")}
    assert value(fams["nodeml_drift_missing_ratio"], model="m", feature="c") == 0.5
    assert (
        "nodeml_drift_out_of_range_ratio" not in fams or not fams["nodeml_drift_out_of_range_ratio"]
    )
    assert not fams.get("nodeml_drift_score")


async def test_reload_rereads_the_token(aiohttp_client, tmp_path, config):
    token = tmp_path / "token"
    token.write_text("one")
    cfg = with_options(config, drift_token_file=str(token))
    collector = DriftCollector(CollectContext(cfg))
    await collector.start()
    try:
        client = await aiohttp_client(_app(collector))
        body = {"rows": make_rows(20)}
        auth = {"Authorization": "Bearer one"}
        assert (
            await client.put("/api/v1/models/m/reference", json=body, headers=auth)
        ).status == 201
        await asyncio.to_thread(token.write_text, "two")
        # As on SIGHUP: in a worker thread, where no event loop runs (this once failed silently).
        await asyncio.to_thread(collector.reload, CollectContext(cfg))
        assert (
            await client.put("/api/v1/models/m/reference", json=body, headers=auth)
        ).status == 401
        auth = {"Authorization": "Bearer two"}
        assert (
            await client.put("/api/v1/models/m/reference", json=body, headers=auth)
        ).status == 200
        # An unreadable token file keeps the previous token.
        await asyncio.to_thread(token.unlink)
        await asyncio.to_thread(collector.reload, CollectContext(cfg))
        assert (
            await client.put("/api/v1/models/m/reference", json=body, headers=auth)
        ).status == 200
    finally:
        await collector.stop()


def _app(collector: DriftCollector) -> web.Application:
    app = web.Application(middlewares=[auth_middleware])
    app[AUTH] = Authenticator({}, [collector.api_token])
    app.add_routes(collector.routes())
    return app


def test_no_models_no_families():
    from node_exporter_ml.collectors.drift import drift_families

    assert drift_families([]) == []

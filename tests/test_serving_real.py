"""Real model servers (MLServer, BentoML, KServe) under real client load, scraped for real.

Each server runs from its own virtualenv (`make test-servers`: their pins clash with
ours and with each other) with a tiny model that sleeps the seconds each request asks
for, so the test controls the latency. For each: the framework is identified, the model
label is right, the windowed p50 equals `histogram_quantile` over the server's own
bucket counters (read with prometheus_client's parser), the request rate equals what
the client counted, and a latency step gives a regression ratio of at least 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.serving import LatencyCauses, ServingCollector
from node_exporter_ml.serving.data import ServingCauses, ServingData
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.serving.window import histogram_quantile
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from tests.helpers import make_config
from tools.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / ".servers"
MODELS = Path(__file__).resolve().parent / "servers"
BASE_DELAY = 0.02
CLIENTS = 4

pytestmark = pytest.mark.timeout(240)


@dataclass(frozen=True)
class Server:
    framework: str
    model: str
    metrics_url: str
    request: Callable[[float], tuple[str, dict[str, object]]]
    histogram: str  # the family whose buckets hold the model's latency
    keep: Callable[[dict[str, str]], bool]  # the histogram series of the model's traffic
    probes: tuple[str, ...] = ()
    pid: int = 0


def _python(framework: str) -> Path:
    python = SERVERS / framework / "bin" / "python"
    if not (SERVERS / framework / ".installed").is_file():
        pytest.skip(f"{framework} is not installed: run `make test-servers`")
    return python


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PYTHONPATH=str(MODELS), BENTOML_HOME=str(tmp / "bentoml"), HOME=str(tmp))
    return env


def _start(
    cmd: list[str], cwd: Path, env: dict[str, str], ready: str, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{cmd[1]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    _stop(proc)
    pytest.fail(f"{cmd[1]} not ready in 120 s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The server leads its own session: end it and the workers it forked, by its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(ProcessLookupError):  # workers that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)


def _mlserver(tmp: Path) -> tuple[Server, subprocess.Popen[bytes]]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    (tmp / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
        "parallel_workers": 0,
    }))  # fmt: skip
    (tmp / "sleep").mkdir()
    (tmp / "sleep" / "model-settings.json").write_text(
        json.dumps({"name": "sleep", "implementation": "mlserver_model.SleepModel"})
    )
    python = _python("mlserver")
    proc = _start(
        [str(python), str(python.parent / "mlserver"), "start", str(tmp)], tmp, _env(tmp),
        f"http://127.0.0.1:{http}/v2/health/ready", tmp / "server.log",
    )  # fmt: skip

    def request(delay: float) -> tuple[str, dict[str, object]]:
        body = {"inputs": [{"name": "d", "shape": [1], "datatype": "FP64", "data": [delay]}]}
        return f"http://127.0.0.1:{http}/v2/models/sleep/infer", body

    server = Server(
        "mlserver", "sleep", f"http://127.0.0.1:{metrics}/metrics", request,
        "rest_server_request_duration_seconds", lambda labels: labels["method"] == "POST",
        probes=(f"http://127.0.0.1:{http}/v2/health/ready",),
    )  # fmt: skip
    return server, proc


def _bentoml(tmp: Path) -> tuple[Server, subprocess.Popen[bytes]]:
    port = free_port()
    python = _python("bentoml")
    proc = _start(
        [str(python), str(python.parent / "bentoml"), "serve", "bentoml_service:Sleep",
         "--host", "127.0.0.1", "--port", str(port)],
        MODELS, _env(tmp), f"http://127.0.0.1:{port}/readyz", tmp / "server.log",
    )  # fmt: skip
    server = Server(
        "bentoml", "Sleep", f"http://127.0.0.1:{port}/metrics",
        lambda delay: (f"http://127.0.0.1:{port}/predict", {"delay": delay}),
        "bentoml_service_request_duration_seconds",
        lambda labels: labels["endpoint"] == "/predict",
        probes=(f"http://127.0.0.1:{port}/readyz", f"http://127.0.0.1:{port}/livez"),
    )  # fmt: skip
    return server, proc


def _kserve(tmp: Path) -> tuple[Server, subprocess.Popen[bytes]]:
    http, grpc = free_port(), free_port()
    python = _python("kserve")
    proc = _start(
        [str(python), str(MODELS / "kserve_model.py"), "sleep", "--http_port", str(http),
         "--grpc_port", str(grpc)],
        tmp, _env(tmp), f"http://127.0.0.1:{http}/v1/models/sleep", tmp / "server.log",
    )  # fmt: skip
    server = Server(
        "kserve", "sleep", f"http://127.0.0.1:{http}/metrics",
        lambda delay: (f"http://127.0.0.1:{http}/v1/models/sleep:predict", {"instances": [delay]}),
        "request_predict_seconds", lambda labels: True,
        probes=(f"http://127.0.0.1:{http}/v2/health/ready",),
    )  # fmt: skip
    return server, proc


STARTERS = {"mlserver": _mlserver, "bentoml": _bentoml, "kserve": _kserve}


@pytest.fixture(scope="module", params=sorted(STARTERS))
def server(request, tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    srv, proc = STARTERS[request.param](tmp)
    try:
        yield Server(**{**srv.__dict__, "pid": proc.pid})
    finally:
        _stop(proc)


async def _load(
    session: aiohttp.ClientSession, server: Server, delay: float, seconds: float
) -> int:
    """CLIENTS closed-loop clients for `seconds`, probing health meanwhile; requests done."""
    url, body = server.request(delay)
    deadline = time.monotonic() + seconds

    async def client() -> int:
        done = 0
        while time.monotonic() < deadline:
            async with session.post(url, json=body) as r:
                assert r.status == 200, await r.text()
                await r.read()
            done += 1
        return done

    async def probe() -> None:
        while time.monotonic() < deadline:
            for p in server.probes:  # probes are no model traffic
                async with session.get(p) as r:
                    await r.read()
            await asyncio.sleep(0.05)

    counts = await asyncio.gather(*(client() for _ in range(CLIENTS)), probe())
    return sum(c for c in counts if isinstance(c, int))


def _buckets(text: str, server: Server) -> dict[float, float]:
    out: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == server.histogram + "_bucket" and server.keep(s.labels):
                le = float(s.labels["le"])
                out[le] = out.get(le, 0.0) + s.value
    return out


def _collector(server: Server, window: float, clock: Callable[[], float]) -> ServingCollector:
    target = ServingTarget(url=server.metrics_url, name=server.framework, pid=server.pid)
    config = make_config(serving_window=window, serving_targets=(target,))
    return ServingCollector(CollectContext(config), clock=clock)


async def test_window_matches_the_servers_own_counters(server):
    clock = {"t": 0.0}
    collector = _collector(server, 600.0, lambda: clock["t"])
    try:
        async with aiohttp.ClientSession() as session:
            await _load(session, server, BASE_DELAY, 0.5)  # warm up: first calls are slower

            async def scrape() -> tuple[ServingData, str]:
                clock["t"] = time.monotonic()
                data = await collector.update(None)
                assert isinstance(data, ServingData)
                async with session.get(server.metrics_url) as r:
                    return data, await r.text()

            _, before = await scrape()
            t0 = clock["t"]
            done = await _load(session, server, BASE_DELAY, 2.0)
            data, after = await scrape()
            seconds = clock["t"] - t0
    finally:
        await collector.stop()
    (target,) = data.targets
    assert target.up
    assert target.framework == server.framework
    assert [(m.model, m.version) for m in target.models] == [(server.model, None)]
    w = target.models[0].window
    assert w.requests == done
    assert w.requests_per_second == pytest.approx(done / seconds, rel=1e-9)
    new, old = _buckets(after, server), _buckets(before, server)
    bounds = sorted(new)
    counts = [new[b] - old.get(b, 0.0) for b in bounds]
    assert counts[-1] == done
    p50 = histogram_quantile(0.5, bounds, counts)
    assert math.isfinite(p50)
    assert dict(w.quantiles)[0.5] == pytest.approx(p50, rel=1e-9)
    assert w.mean_seconds is not None
    assert BASE_DELAY <= w.mean_seconds < 10 * BASE_DELAY


async def test_a_latency_step_is_a_regression(server):
    window = 2.0
    collector = _collector(server, window, time.monotonic)
    causes = LatencyCauses(make_config(serving_window=window, serving_baseline=900.0))
    ratios = []
    try:
        async with aiohttp.ClientSession() as session:
            for tick in range(14):
                await _load(session, server, BASE_DELAY if tick < 9 else 5 * BASE_DELAY, 0.5)
                data = await collector.update(None)
                assert isinstance(data, ServingData)
                snap = Snapshot(
                    taken_at=time.monotonic(),
                    results={"serving": CollectorResult("serving", True, 0.0, data)},
                )
                derived = causes(snap).derived["serving"]
                assert isinstance(derived, ServingCauses)
                report = derived.reports.get((server.framework, server.model, None))
                ratios.append(None if report is None else report.regression_ratio)
    finally:
        await collector.stop()
    assert ratios[8] is not None, ratios  # a baseline before the step
    assert ratios[8] < 1.5, ratios
    assert ratios[-1] is not None, ratios
    assert ratios[-1] >= 2, ratios


def test_the_saved_real_scrapes_read_as_their_framework():
    from node_exporter_ml.serving.parse import parse_exposition
    from node_exporter_ml.serving.profiles import read_exposition

    expected = {"mlserver-1.7.1": ("mlserver", "sleep"), "bentoml-1.4.40": ("bentoml", "Sleep"),
                "kserve-0.21.0": ("kserve", "sleep")}  # fmt: skip
    for name, (framework, model) in expected.items():
        text = (Path(__file__).parent / "fixtures" / "serving-real" / f"{name}.prom").read_text()
        reading = read_exposition(parse_exposition(text))
        assert reading.framework == framework
        assert list(reading.models) == [(model, None)]
        m = reading.models[(model, None)]
        assert m.count == 3  # the three requests sent before the scrape was saved
        assert m.histogram is not None  # quantiles, MLServer's from its one model's route
        assert m.histogram.counts[-1] == 3

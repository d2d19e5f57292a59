"""The serving collector: scrape model servers, window their latency, publish it with its causes.

Targets come from the config file (`serving.targets`), from pods' `nodeml.io/scrape`
annotations (the kube collector's targets in the previous snapshot) and, with
--serving.discover, from inference processes listening on a framework's default port.

The collector is the orchestration: which targets, when to scrape and look up owners, its
threads and background tasks. The parts it drives live in serving/: scrape.py (HTTP and
parsing), targets.py (each target's windows, restarts and error counts), window.py (the
windowed statistics), and host/socket_owners.py finds the processes behind the targets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.core import Metric

from node_exporter_ml.collectors.base import AsyncCollector, CollectContext
from node_exporter_ml.host.sockets import read_listen_urls
from node_exporter_ml.kube.pods import KUBE, kube_targets
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.pids import inference_pids
from node_exporter_ml.registry import register_collector, register_enricher
from node_exporter_ml.series import Series, table_families
from node_exporter_ml.serving.causes import CAUSES, CauseReport
from node_exporter_ml.serving.data import (
    SERVING,
    SERVING_CAUSES,
    ModelStats,
    ServingData,
    TargetStatus,
)
from node_exporter_ml.serving.enrich import LatencyCauses
from node_exporter_ml.serving.join import owner_gpus, owner_pids
from node_exporter_ml.serving.options import SERVING_OPTIONS, ServingTarget
from node_exporter_ml.serving.profiles import GENERIC
from node_exporter_ml.serving.scrape import ScrapeOutcome, Scraper
from node_exporter_ml.serving.targets import Targets
from node_exporter_ml.serving.window import WindowStats
from node_exporter_ml.snapshot import CGROUP, NVML, PROCESS, GpuSample, Snapshot

log = logging.getLogger(__name__)

DISCOVER_INTERVAL_SECONDS = 60.0
# (port, path) where each framework serves its metrics by default (fixtures/serving/README).
DEFAULT_ENDPOINTS: tuple[tuple[int, str], ...] = (
    (8000, "/metrics"),  # vLLM
    (30000, "/metrics"),  # SGLang
    (8002, "/metrics"),  # Triton
    (8082, "/metrics"),  # TorchServe, MLServer
    (3000, "/metrics"),  # BentoML, TGI
    (9000, "/metrics"),  # TGI --prometheus-port
    (8080, "/metrics"),  # KServe, Ray under KubeRay
    (8501, "/monitoring/prometheus/metrics"),  # TF Serving
)

__all__ = ["LatencyCauses", "ServingCollector"]


def _info_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/info", "", ""))


@register_collector(
    "serving",
    produces=SERVING,
    reads={
        PROCESS: "serving owners",
        NVML: "serving targets' GPUs, discovery among GPU processes",
        KUBE: "annotation-declared serving targets",
    },
    options=SERVING_OPTIONS,
)
class ServingCollector(AsyncCollector[ServingData]):
    """Model-server latency: scrapes each target's /metrics (vLLM, Triton, TGI, ... see docs).

    Windowed quantiles, mean, request rate and error ratio per model over --serving.window,
    from the deltas of the servers' own histograms and counters; with the LatencyCauses
    enricher, regression ratio and cause scores.

        nodeml_serving_request_latency_seconds{target="vllm",model="llama",quantile="0.9"} 0.82
    """

    def __init__(self, ctx: CollectContext, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx)
        self.clock = clock
        options = ctx.config.section(SERVING_OPTIONS)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="nodeml-serving"
        )
        # /proc scans (socket owners, discovery) get their own thread: parsing never waits.
        self._proc_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="nodeml-serving-proc"
        )
        self._owner_job: asyncio.Future[dict[str, int | None]] | None = None
        self.scraper = Scraper(
            timeout=options.timeout,
            max_bytes=options.max_body_bytes,
            concurrency=options.concurrency,
            executor=self._executor,
        )
        self._targets = Targets()
        self._discovered: dict[str, ServingTarget] = {}
        self._discovered_at: float | None = None
        self._discover_task: asyncio.Task[None] | None = None
        self._once = OnceLogger(log)

    def reload(self, ctx: CollectContext) -> None:
        """Take the reloaded targets and scrape limits."""
        super().reload(ctx)
        options = ctx.config.section(SERVING_OPTIONS)
        self.scraper.configure(
            timeout=options.timeout,
            max_bytes=options.max_body_bytes,
            concurrency=options.concurrency,
        )

    async def stop(self) -> None:
        """Close the HTTP session and the worker thread."""
        if self._discover_task is not None:
            self._discover_task.cancel()
            await asyncio.gather(self._discover_task, return_exceptions=True)
        await self.scraper.close()
        if self._owner_job is not None:
            self._owner_job.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._proc_executor.shutdown(wait=False, cancel_futures=True)

    # --- targets ----------------------------------------------------------------------------

    def targets(self, previous: Snapshot | None) -> list[tuple[ServingTarget, str]]:
        """Every target to scrape this tick with its source (config, kube, discover)."""
        out: dict[str, tuple[ServingTarget, str]] = {}
        for t in self.ctx.config.section(SERVING_OPTIONS).targets:
            out.setdefault(t.label, (t, "config"))
        for t in kube_targets(previous):
            out.setdefault(t.label, (t, "kube"))
        if self.ctx.config.section(SERVING_OPTIONS).discover:
            for t in self._discovered.values():
                out.setdefault(t.label, (t, "discover"))
        return list(out.values())

    def _start_discovery(self, previous: Snapshot | None, now: float) -> None:
        """Probe for new model servers in the background, at most once a minute."""
        task = self._discover_task
        if task is not None:
            if not task.done():
                return
            self._discover_task = None
            if not task.cancelled() and task.exception() is not None:
                self._once.log(
                    logging.WARNING, "discover", "serving discovery failed: %s", task.exception()
                )
        last = self._discovered_at
        if last is not None and now - last < DISCOVER_INTERVAL_SECONDS:
            return
        self._discovered_at = now
        self._discover_task = asyncio.create_task(
            self._discover(previous), name="nodeml-serving-discover"
        )

    async def _discover(self, previous: Snapshot | None) -> None:
        pids = inference_pids(previous)
        if not pids:
            self._discovered = {}
            return
        procfs = self.ctx.config.procfs
        loop = asyncio.get_running_loop()
        ports = {p for p, _ in DEFAULT_ENDPOINTS}

        def listening() -> list[tuple[int, int, str]]:
            return [
                (pid, port, host)
                for pid in pids
                for port, host in read_listen_urls(procfs, pid, ports)
            ]

        found = await loop.run_in_executor(self._proc_executor, listening)
        candidates: list[tuple[int, str]] = []
        for pid, port, host in found:
            shown = f"[{host}]" if ":" in host else host
            for p, path in DEFAULT_ENDPOINTS:
                if p == port:
                    candidates.append((pid, f"http://{shown}:{port}{path}"))
        outcomes = await asyncio.gather(*(self.scraper.scrape(url) for _, url in candidates))
        discovered: dict[str, ServingTarget] = {}
        for (pid, url), outcome in zip(candidates, outcomes, strict=True):
            reading = outcome.reading
            if reading is None or (reading.framework == GENERIC.name and not reading.models):
                continue
            target = ServingTarget(url=url)
            if target.label not in discovered:
                discovered[target.label] = target
                self._targets.get(target.label).socket_pid = pid
        self._discovered = discovered

    def _apply_owners(self) -> None:
        job = self._owner_job
        if job is None or not job.done():
            return
        self._owner_job = None
        if job.cancelled():
            return
        err = job.exception()
        if err is not None:
            self._once.log(logging.WARNING, "owners", "finding socket owners failed: %s", err)
            return
        for name, pid in job.result().items():
            state = self._targets.states.get(name)
            if state is not None:
                state.socket_pid = pid

    def _resolve_owners(self, targets: Iterable[ServingTarget]) -> None:
        """Find the socket owners of targets without an explicit owner, in the background.

        The context's SocketOwners caches them for every collector (a minute, or until
        the owner exits); a scan of /proc may take a while on a busy node, so the lookup
        runs in its own thread and its result is taken at a later tick, never delaying
        the scrapes.
        """
        self._apply_owners()
        if self._owner_job is not None:
            return
        todo = [t for t in targets if t.pid is None and not t.container_id and not t.pod]
        sockets = self.ctx.sockets

        def resolve() -> dict[str, int | None]:
            pids = sockets.lookup(self.name, [t.endpoint for t in todo])
            return {t.label: pid for t, pid in zip(todo, pids, strict=True)}

        loop = asyncio.get_running_loop()
        self._owner_job = loop.run_in_executor(self._proc_executor, resolve)

    # --- one tick -------------------------------------------------------------------------

    async def update(self, previous: Snapshot | None) -> ServingData:
        """Scrape every target once and return their windows."""
        now = self.clock()
        if self.ctx.config.section(SERVING_OPTIONS).discover:
            self._start_discovery(previous, now)
        started = time.monotonic()
        targets = self.targets(previous)
        self._resolve_owners(t for t, _ in targets)
        # Finish inside the sampler's limit for this collector, however many targets hang.
        budget = max(0.05, self.ctx.config.timeout * 0.9 - (time.monotonic() - started))
        outcomes = await self._scrape_all(targets, budget)
        now = self.clock()
        statuses = []
        for (target, source), outcome in zip(targets, outcomes, strict=True):
            statuses.append(self._status(target, source, outcome, now))
        self._targets.keep({t.label for t, _ in targets})
        self.scraper.forget({t.url for t, _ in targets})
        return ServingData(
            targets=tuple(statuses),
            errors_total=dict(self._targets.errors),
            window_seconds=self.ctx.config.section(SERVING_OPTIONS).window,
        )

    async def _scrape_all(
        self, targets: list[tuple[ServingTarget, str]], budget: float
    ) -> list[ScrapeOutcome]:
        tasks = [asyncio.ensure_future(self._scrape_one(t)) for t, _ in targets]
        if not tasks:
            return []
        try:
            _, pending = await asyncio.wait(tasks, timeout=budget)
        finally:
            # Also when the sampler cancels this update: no scrape outlives it.
            unfinished = [t for t in tasks if not t.done()]
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.gather(*unfinished, return_exceptions=True)
        return [
            ScrapeOutcome(None, "timeout", budget, "collector time limit")
            if task in pending or task.cancelled()
            else task.result()
            for task in tasks
        ]

    async def _scrape_one(self, target: ServingTarget) -> ScrapeOutcome:
        state = self._targets.get(target.label)
        outcome = await self.scraper.scrape(target.url, state.info_model)
        reading = outcome.reading
        if reading is not None and reading.info_url_path and not state.info_tried:
            # TGI names no model in its metrics: ask its /info once.
            state.info_tried = True
            state.info_model = await self.scraper.info_model(_info_url(target.url))
            if state.info_model:
                models = {(state.info_model, v): m for (_, v), m in reading.models.items()}
                outcome = replace(outcome, reading=replace(reading, models=models))
        return outcome

    def _status(
        self, target: ServingTarget, source: str, outcome: ScrapeOutcome, now: float
    ) -> TargetStatus:
        state = self._targets.get(target.label)
        base = TargetStatus(
            name=target.label,
            url=target.url,
            source=source,
            up=False,
            pid=target.pid,
            container_id=target.container_id,
            pod=target.pod,
            socket_pid=state.socket_pid,
            scrape_seconds=outcome.seconds,
        )
        reading = outcome.reading
        if reading is None:
            reason = outcome.reason or "refused"
            self._targets.count_error(target.label, reason)
            self._once.log(
                logging.WARNING,
                f"down:{target.label}",
                "serving target %s (%s) is down: %s",
                target.label,
                target.url,
                outcome.detail or reason,
            )
            state.fail(now)
            return base
        if self._once.forget(f"down:{target.label}"):
            log.info("serving target %s is up again", target.label)
        models = state.observe(reading, now, self.ctx.config.section(SERVING_OPTIONS).window)
        return replace(base, up=True, framework=reading.framework, models=models)

    # --- metrics ----------------------------------------------------------------------------

    def families(self, data: ServingData, snapshot: Snapshot) -> Iterable[Metric]:
        """The serving families, with the owner's workload labels on per-model series."""
        return render_families(data, snapshot)


register_enricher(
    "latency_causes",
    LatencyCauses,
    owners=("serving",),
    after=("workloads",),  # serving owners by pod come from the workload labels
    reads={
        PROCESS: "serving owners",
        NVML: "GPU latency causes",
        CGROUP: "CPU-throttling, memory-stall and OOM latency causes",
    },
)


def _model_labels(target: str, m: ModelStats, workload: Mapping[str, str]) -> dict[str, str]:
    labels = {"target": target, "model": m.model}
    if m.version is not None:
        labels["version"] = m.version
    labels.update(workload)
    return labels


@dataclass(frozen=True, slots=True)
class _ModelRow:
    """One model of one target: its window, and its cause report when it has a regression."""

    window: WindowStats
    report: CauseReport | None


_T = Series[TargetStatus]
_M = Series[_ModelRow]

# Rows: one target, labelled target.
UP_SERIES = (
    _T("nodeml_serving_target_up", "gauge",
       "1 when the last scrape of the model server's metrics endpoint worked, else 0.",
       lambda t: 1.0 if t.up else 0.0),
)  # fmt: skip

# Rows: one (target, reason) pair of ServingData.errors_total, labelled target and reason.
ERROR_SERIES = (
    Series[int]("nodeml_serving_scrape_errors_total", "counter",
                "Failed scrapes of the model server's metrics endpoint, by reason "
                "(timeout, refused, http_<code>, too_large, parse).",
                lambda count: count),
)  # fmt: skip

# Rows: one target, labelled target.
DURATION_SERIES = (
    _T("nodeml_serving_scrape_duration_seconds", "gauge",
       "Seconds the last scrape of the model server took.", lambda t: t.scrape_seconds),
)  # fmt: skip

# Rows: one target, labelled target, framework, pid, source and its owner's workload labels.
INFO_SERIES = (
    _T("nodeml_serving_target_info", "gauge",
       "A model-server target: its framework (identified from its metric names), owner pid "
       "and where it came from (config, kube, discover).",
       lambda _: 1.0),
)  # fmt: skip

# Rows: one GPU of one target's owner processes, labelled target, gpu and uuid.
GPU_SERIES = (
    Series[GpuSample]("nodeml_serving_target_gpu_info", "gauge",
                      "A GPU the target's owner processes run on (from NVML's per-process "
                      "lists): the join key from a model server to its GPU series.",
                      lambda _: 1.0),
)  # fmt: skip


@functools.lru_cache(maxsize=4)
def model_series(window: str) -> tuple[Series[_ModelRow], ...]:
    """The per-model table; its HELP names the window (`60s`), so it is built once per window.

    Rows: one model of one target, labelled target, model, version (when the server names
    one) and the owner's workload labels.
    """
    return (
        _M("nodeml_serving_request_latency_seconds", "gauge",
           f"Request latency quantiles over the last {window}, interpolated from the server's "
           "own histogram as histogram_quantile does.",
           labels=("quantile",), each=lambda r: (((f"{q:g}",), v) for q, v in r.window.quantiles)),
        _M("nodeml_serving_request_latency_mean_seconds", "gauge",
           f"Mean request latency over the last {window}, from the server's latency sum and "
           "count.", lambda r: r.window.mean_seconds),
        _M("nodeml_serving_requests_per_second", "gauge",
           f"Requests completed per second over the last {window}, from the server's counters.",
           lambda r: r.window.requests_per_second),
        _M("nodeml_serving_request_error_ratio", "gauge",
           f"Share of requests that failed over the last {window}, where the server counts "
           "errors.", lambda r: r.window.error_ratio),
        _M("nodeml_serving_requests_in_flight", "gauge",
           "Running plus queued requests (the server's own gauges), mean over the last "
           f"{window}.", lambda r: r.window.in_flight),
        _M("nodeml_serving_latency_regression_ratio", "gauge",
           "Window mean latency / baseline (median of window latencies over "
           "--serving.baseline, current window excluded).",
           lambda r: r.report.regression_ratio if r.report else None),
        _M("nodeml_serving_latency_baseline_seconds", "gauge",
           "Baseline mean latency the regression ratio compares against.",
           lambda r: r.report.baseline_seconds if r.report else None),
        _M("nodeml_serving_latency_cause", "gauge",
           "0-1: how strongly each node signal moved with the latency regression "
           f"({', '.join(CAUSES)}).",
           labels=("cause",),
           each=lambda r: (((c,), r.report.scores.get(c, 0.0)) for c in CAUSES if r.report)),
    )  # fmt: skip


def render_families(data: ServingData, snapshot: Snapshot) -> list[Metric]:
    """Build the serving metric families from the collector data and the causes (pure).

    One series table per kind of row (target, scrape-error counter, target info, owner GPU,
    model), in the order of the exposition.
    """
    causes = snapshot.derived_data(SERVING_CAUSES)
    reports = causes.reports if causes is not None else {}
    nvml = snapshot[NVML]
    targets: list[tuple[dict[str, str], TargetStatus]] = []
    infos: list[tuple[dict[str, str], TargetStatus]] = []
    gpus: list[tuple[dict[str, str], GpuSample]] = []
    models: list[tuple[dict[str, str], _ModelRow]] = []
    for t in data.targets:
        targets.append(({"target": t.name}, t))
        pids = owner_pids(t, snapshot)
        workload = dict(snapshot.workload_labels(pids[0])) if pids else {}
        info = {
            "target": t.name,
            "framework": t.framework or "",
            "pid": str(pids[0]) if pids else "",
            "source": t.source,
        }
        infos.append((info | workload, t))
        gpus += [
            ({"target": t.name, "gpu": str(g.index), "uuid": g.uuid}, g)
            for g in owner_gpus(pids, nvml)
        ]
        for m in t.models:
            report = reports.get((t.name, m.model, m.version))
            if report is not None and report.regression_ratio is None:
                report = None  # no regression figures without a ratio
            models.append((_model_labels(t.name, m, workload), _ModelRow(m.window, report)))
    errors = [({"target": n, "reason": r}, c) for (n, r), c in sorted(data.errors_total.items())]
    return [
        *table_families(UP_SERIES, targets),
        *table_families(ERROR_SERIES, errors),
        *table_families(DURATION_SERIES, targets),
        *table_families(INFO_SERIES, infos),
        *table_families(GPU_SERIES, gpus),
        *table_families(model_series(f"{data.window_seconds:g}s"), models),
    ]

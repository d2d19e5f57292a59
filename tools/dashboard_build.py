"""Builds deploy/grafana/dashboards/node-exporter-ml.json (the classic Grafana JSON model).

The committed JSON is what users import or provision; this module is how it is written, so that
panels stay consistent (datasource variable, selectors, units). tools/deploy_build.py writes it
(`make manifests`, with the ConfigMap and the Helm chart's copy made from it);
tests/test_dashboard.py checks the committed file equals `render()` and runs every query against
a real Prometheus scraping a real agent.

    python -m tools.dashboard_build   # prints the JSON
"""

from __future__ import annotations

import json
from typing import Any

UID = "node-exporter-ml"
DS = {"type": "prometheus", "uid": "${datasource}"}
NODE = 'job=~"$job", instance=~"$instance"'
GPU = NODE + ', gpu=~"$gpu"'


class _Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int = 8, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    """A Prometheus query of a panel."""
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "refId": ref, "range": True}
    if legend:
        t["legendFormat"] = legend
    t.update(extra)
    return t


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A panel with its datasource, description and unit set (dashboard-linter's rules)."""
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom or {}}, "overrides": []},
        "options": options or {},
    }
    p.update(extra)
    return p


def timeseries(
    title: str, description: str, unit: str, *targets: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    """A time-series panel with a table legend showing last and max."""
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel(
        "timeseries",
        title,
        description,
        list(targets),
        unit,
        options=options,
        custom={"fillOpacity": 10, "showPoints": "never"},
        **kw,
    )


def stat(title: str, description: str, unit: str, expr: str, **kw: Any) -> dict[str, Any]:
    """A single-value panel."""
    return panel(
        "stat",
        title,
        description,
        [target(expr, instant=True, range=False)],
        unit,
        options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        **kw,
    )


def state_timeline(title: str, description: str, expr: str, legend: str) -> dict[str, Any]:
    """On/off series over time (clock-event reasons, targets up, collectors)."""
    return panel(
        "state-timeline",
        title,
        description,
        [target(expr, legend)],
        "none",
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
        custom={"fillOpacity": 70, "lineWidth": 0},
    )


def variable_query(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    """A query variable over label values, with All."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "sort": 3,
    }


def node_row(g: _Layout) -> None:
    """The node as a whole (the node collector, psutil): is the host itself the bottleneck?"""
    g.row("Node")
    inst = "{{instance}}"
    g.add(
        timeseries(
            "Node CPU by mode",
            "Share of the node's CPU time in each mode, all CPUs together "
            "(nodeml_node_cpu_seconds_total over nodeml_node_cpus).",
            "percentunit",
            target(
                f"sum by (instance, mode) (rate(nodeml_node_cpu_seconds_total{{{NODE}, "
                f'mode!="idle"}}[$__rate_interval])) / on (instance) group_left '
                f"nodeml_node_cpus{{{NODE}}}",
                inst + " {{mode}}",
            ),
            min=0,
        )
    )
    g.add(
        timeseries(
            "Load per CPU",
            "1- and 15-minute load averages divided by the logical CPUs: above 1, tasks "
            "queue for a CPU (also for uninterruptible IO).",
            "none",
            target(f"nodeml_node_load1{{{NODE}}} / nodeml_node_cpus{{{NODE}}}", inst + " 1m"),
            target(
                f"nodeml_node_load15{{{NODE}}} / nodeml_node_cpus{{{NODE}}}", inst + " 15m", "B"
            ),
            min=0,
        )
    )
    g.add(
        timeseries(
            "Node memory and swap in use",
            "Share of memory not available without swapping (1 - MemAvailable/MemTotal), "
            "and of swap in use.",
            "percentunit",
            target(
                f"1 - nodeml_node_memory_available_bytes{{{NODE}}} "
                f"/ nodeml_node_memory_total_bytes{{{NODE}}}",
                inst + " memory",
            ),
            target(
                f"1 - nodeml_node_swap_free_bytes{{{NODE}}} "
                f"/ (nodeml_node_swap_total_bytes{{{NODE}}} > 0)",
                inst + " swap",
                "B",
            ),
            min=0,
            max=1,
        )
    )
    g.add(
        stat(
            "Node uptime",
            "Time since each node booted (a reboot resets GPU state and XID counts).",
            "s",
            f"min(nodeml_node_uptime_seconds{{{NODE}}})",
        ),
        w=6,
        h=4,
    )


def build() -> dict[str, Any]:
    """The whole dashboard."""
    g = _Layout()

    g.row("Overview")
    g.add(
        stat(
            "GPUs",
            "GPUs seen by NVML on the selected nodes.",
            "none",
            f"count(nodeml_gpu_info{{{GPU}}})",
        ),
        w=4,
        h=4,
    )
    g.add(
        stat(
            "Mean GPU utilization",
            "Mean of nodeml_gpu_utilization_ratio over the selected GPUs.",
            "percentunit",
            f"avg(nodeml_gpu_utilization_ratio{{{GPU}}})",
        ),
        w=5,
        h=4,
    )
    g.add(
        stat(
            "GPU power",
            "Power drawn by the selected GPUs (nvmlDeviceGetPowerUsage).",
            "watt",
            f"sum(nodeml_gpu_power_watts{{{GPU}}})",
        ),
        w=5,
        h=4,
    )
    g.add(
        stat(
            "Oldest snapshot",
            "Age of the oldest agent snapshot: more than a few sampler "
            "intervals means a stuck sampler.",
            "s",
            f"max(time() - nodeml_snapshot_timestamp_seconds{{{NODE}}})",
        ),
        w=5,
        h=4,
    )
    g.add(
        stat(
            "Failing collectors",
            "Collectors whose last run failed (nodeml_collector_success == 0).",
            "none",
            f"sum(1 - nodeml_collector_success{{{NODE}}})",
        ),
        w=5,
        h=4,
    )

    g.row("GPUs")
    legend = "{{instance}} GPU {{gpu}}"
    g.add(
        timeseries(
            "GPU utilization",
            "Share of time a kernel ran (nvmlDeviceGetUtilizationRates).",
            "percentunit",
            target(f"nodeml_gpu_utilization_ratio{{{GPU}}}", legend),
            max=1,
            min=0,
        )
    )
    g.add(
        timeseries(
            "SM and tensor activity (GPM)",
            "GPM profiling metrics (Hopper and newer): share of SMs busy and of tensor "
            "pipes active. Unlike utilization, these show how full the GPU is.",
            "percentunit",
            target(f"nodeml_gpu_sm_active_ratio{{{GPU}}}", legend + " SM"),
            target(f"nodeml_gpu_tensor_active_ratio{{{GPU}}}", legend + " tensor", "B"),
            min=0,
            max=1,
        )
    )
    g.add(
        timeseries(
            "GPU memory used",
            "Framebuffer memory in use (nvmlDeviceGetMemoryInfo).",
            "bytes",
            target(f"nodeml_gpu_memory_used_bytes{{{GPU}}}", legend),
        )
    )
    g.add(
        timeseries(
            "Power",
            "Power draw per GPU (nvmlDeviceGetPowerUsage).",
            "watt",
            target(f"nodeml_gpu_power_watts{{{GPU}}}", legend),
        )
    )
    g.add(
        timeseries(
            "Temperature",
            "GPU die temperature (nvmlDeviceGetTemperature).",
            "celsius",
            target(f"nodeml_gpu_temperature_celsius{{{GPU}}}", legend),
        )
    )
    g.add(
        timeseries(
            "SM clock",
            "Current SM clock; it drops when a clock-event reason is active.",
            "hertz",
            target(f"nodeml_gpu_sm_clock_hertz{{{GPU}}}", legend),
        )
    )
    g.add(
        state_timeline(
            "Clock-event reasons",
            "Why clocks are held down (nvmlDeviceGetCurrentClocksEventReasons): "
            "power cap, thermal slowdown, power brake, idle...",
            f"nodeml_gpu_clock_event_active{{{GPU}}}",
            "{{instance}} GPU {{gpu}} {{reason}}",
        ),
        w=16,
    )
    g.add(
        timeseries(
            "XID errors",
            "XID errors per GPU from the NVML event set (0 when none; see the alerts "
            "for which XIDs mean a hardware fault).",
            "none",
            target(
                f"sum by (instance, gpu, xid) (increase(nodeml_gpu_xid_errors_total"
                f"{{{GPU}}}[$__rate_interval])) or sum by (instance, gpu) "
                f"(0 * nodeml_gpu_info{{{GPU}}})",
                legend + " XID {{xid}}",
            ),
        )
    )

    g.row("GPU health")
    g.add(
        state_timeline(
            "Health checks",
            "Per-GPU health verdict per check from the agent: 0 pass, 1 warn, 2 fail "
            "(xid, memory, nvlink, pcie, thermal, power, fabric, lost; see docs/nvml.md).",
            f"max by (instance, gpu, check) (nodeml_gpu_health{{{GPU}}})",
            "{{instance}} GPU {{gpu}} {{check}}",
        ),
        w=12,
    )
    g.add(
        state_timeline(
            "Recommended action",
            "1 for the action the agent recommends per GPU (none, restart_application, "
            "reset_gpu, drain_and_reset, reboot_node, contact_support).",
            f"max by (instance, gpu, action) (nodeml_gpu_recommended_action{{{GPU}}})",
            "{{instance}} GPU {{gpu}} {{action}}",
        ),
        w=8,
    )
    g.add(
        timeseries(
            "GPUs present and expected",
            "GPUs NVML enumerates against those the node should have (--nvml.expected-gpus, "
            "else the count at the agent's start): fewer means a GPU fell off the bus.",
            "none",
            target(f"sum by (instance) (nodeml_gpus{{{NODE}}})", "{{instance}} present"),
            target(
                f"sum by (instance) (nodeml_gpu_expected{{{NODE}}})",
                "{{instance}} expected",
                ref="B",
            ),
        ),
        w=4,
    )

    g.row("Processes and pods on the GPUs")
    proc = "{{namespace}}/{{pod}} {{comm}}[{{pid}}] GPU {{gpu}}"
    g.add(
        timeseries(
            "GPU memory per process",
            "GPU memory of each compute process (nvmlDeviceGetComputeRunningProcesses), "
            "labelled with its pod when it runs in one.",
            "bytes",
            target(f"nodeml_process_gpu_memory_bytes{{{GPU}}}", proc),
        ),
        w=12,
    )
    g.add(
        timeseries(
            "SM share per process",
            "Share of the GPU's SMs each process kept busy "
            "(nvmlDeviceGetProcessUtilization, integrated into "
            "nodeml_process_gpu_sm_seconds_total).",
            "percentunit",
            target(f"rate(nodeml_process_gpu_sm_seconds_total{{{GPU}}}[$__rate_interval])", proc),
            min=0,
        ),
        w=12,
    )
    g.add(
        panel(
            "bargauge",
            "GPU memory per pod",
            "GPU memory summed per pod over its processes and GPUs (empty namespace/pod: "
            "processes outside Kubernetes).",
            [
                target(
                    f"sum by (namespace, pod) (nodeml_process_gpu_memory_bytes{{{GPU}}})",
                    "{{namespace}}/{{pod}}",
                    instant=True,
                    range=False,
                )
            ],
            "bytes",
            options={
                "displayMode": "gradient",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"]},
            },
        ),
        w=8,
    )
    g.add(
        timeseries(
            "Process CPU",
            "CPU time of the inference processes, in cores.",
            "percentunit",
            target(
                f"sum without (mode) "
                f"(rate(nodeml_process_cpu_seconds_total{{{NODE}}}[$__rate_interval]))",
                "{{namespace}}/{{pod}} {{comm}}[{{pid}}]",
            ),
        ),
        w=8,
    )
    g.add(
        timeseries(
            "Process resident memory",
            "Resident memory of the inference processes.",
            "bytes",
            target(
                f"nodeml_process_resident_memory_bytes{{{NODE}}}",
                "{{namespace}}/{{pod}} {{comm}}[{{pid}}]",
            ),
        ),
        w=8,
    )

    g.row("Model serving")
    model = "{{instance}} {{target}} {{model}}"
    g.add(
        timeseries(
            "Latency p50 / p99",
            "Windowed request-latency quantiles of each model server (over "
            "--serving.window, from its own histogram).",
            "s",
            target(
                f'nodeml_serving_request_latency_seconds{{{NODE}, quantile="0.5"}}', model + " p50"
            ),
            target(
                f'nodeml_serving_request_latency_seconds{{{NODE}, quantile="0.99"}}',
                model + " p99",
                "B",
            ),
        ),
        w=12,
    )
    g.add(
        timeseries(
            "Throughput",
            "Requests per second each model server answers.",
            "reqps",
            target(f"nodeml_serving_requests_per_second{{{NODE}}}", model),
        ),
        w=12,
    )
    g.add(
        timeseries(
            "Latency regression",
            "Current window latency / baseline latency (over --serving.baseline); "
            "the latency alert fires above 2.",
            "suffix:x",
            target(f"nodeml_serving_latency_regression_ratio{{{NODE}}}", model),
        ),
        w=8,
    )
    g.add(
        timeseries(
            "Latency causes",
            "How strongly each cause explains the current latency (0-1): noisy "
            "neighbour, GPU saturation, CPU throttling, memory pressure, power/thermal "
            "throttling, load.",
            "percentunit",
            target(f"nodeml_serving_latency_cause{{{NODE}}}", "{{target}} {{model}} {{cause}}"),
            min=0,
            max=1,
        ),
        w=8,
    )
    g.add(
        state_timeline(
            "Model servers up",
            "1 when the agent's last scrape of the model server worked.",
            f"nodeml_serving_target_up{{{NODE}}}",
            "{{instance}} {{target}}",
        ),
        w=8,
    )

    g.row("Containers of the inference processes")
    ctr = "{{namespace}}/{{pod}}/{{container}}{{unit}}"
    g.add(
        timeseries(
            "CPU throttling",
            "Seconds per second the container's cgroup was throttled by its CPU limit "
            "(cpu.stat throttled_usec).",
            "percentunit",
            target(
                f"rate(nodeml_container_cpu_throttled_seconds_total{{{NODE}}}[$__rate_interval])",
                ctr,
            ),
        )
    )
    g.add(
        timeseries(
            "Memory working set",
            "Working set of the container's cgroup (memory.current minus inactive file).",
            "bytes",
            target(f"nodeml_container_memory_working_set_bytes{{{NODE}}}", ctr),
        )
    )
    g.add(
        timeseries(
            "Pressure stalls",
            "Share of time tasks of the cgroup waited for CPU, memory or IO (PSI).",
            "percentunit",
            target(
                f"rate(nodeml_container_pressure_cpu_waiting_seconds_total{{{NODE}}}"
                f"[$__rate_interval])",
                ctr + " cpu",
            ),
            target(
                f"rate(nodeml_container_pressure_memory_waiting_seconds_total"
                f"{{{NODE}}}[$__rate_interval])",
                ctr + " memory",
                "B",
            ),
            target(
                f"rate(nodeml_container_pressure_io_waiting_seconds_total{{{NODE}}}"
                f"[$__rate_interval])",
                ctr + " io",
                "C",
            ),
        )
    )

    node_row(g)

    g.row("Data drift")
    g.add(
        panel(
            "table",
            "Drift per feature",
            "Latest drift test of each feature against the model's reference data "
            "(Evidently's defaults: test per column type and size, its threshold).",
            [
                target(
                    f"nodeml_drift_score{{{NODE}}}",
                    "",
                    "A",
                    instant=True,
                    range=False,
                    format="table",
                ),
                target(
                    f"nodeml_drift_detected{{{NODE}}}",
                    "",
                    "B",
                    instant=True,
                    range=False,
                    format="table",
                ),
            ],
            "none",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "job": True, "__name__": True},
                        "renameByName": {"Value #A": "score", "Value #B": "drift detected"},
                    },
                },
            ],
            options={
                "showHeader": True,
                "sortBy": [{"displayName": "drift detected", "desc": True}],
            },
        ),
        w=16,
        h=10,
    )
    g.add(
        timeseries(
            "Share of drifted features",
            "Share of each model's features that drifted; dataset drift at 0.5.",
            "percentunit",
            target(f"nodeml_dataset_drift_share{{{NODE}}}", "{{instance}} {{model}}"),
            min=0,
            max=1,
        ),
        w=8,
        h=10,
    )

    g.row("Agent")
    g.add(
        state_timeline(
            "Collectors",
            "1 when the collector's last run succeeded.",
            f"nodeml_collector_success{{{NODE}}}",
            "{{instance}} {{collector}}",
        ),
        w=12,
    )
    g.add(
        timeseries(
            "Collector duration",
            "Time each collector took in the last tick.",
            "s",
            target(f"nodeml_collector_duration_seconds{{{NODE}}}", "{{instance}} {{collector}}"),
        ),
        w=12,
    )

    return {
        "uid": UID,
        "title": "node-exporter-ml",
        "description": "GPU nodes for inference: GPUs, the processes and pods on them, model "
        "latency and its causes, containers, data drift (node-exporter-ml).",
        "tags": ["node-exporter-ml", "gpu", "inference"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "refresh": 1,
                    "regex": "",
                },
                variable_query("job", "Job", "label_values(nodeml_build_info, job)"),
                variable_query(
                    "instance", "Node", 'label_values(nodeml_build_info{job=~"$job"}, instance)'
                ),
                variable_query(
                    "gpu",
                    "GPU",
                    'label_values(nodeml_gpu_info{job=~"$job", instance=~"$instance"}, gpu)',
                ),
            ]
        },
        "panels": g.panels,
    }


def render() -> str:
    """The JSON text as committed."""
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")

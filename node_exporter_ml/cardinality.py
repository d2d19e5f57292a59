"""The operator's cardinality policy (`metrics:` in --config.file), applied to each tick's families.

Pure: families in, families out. In order: families dropped by glob; per-process series
beyond `max_processes` folded into one `pid="other"` series per remaining label set;
per-process families kept, replaced or joined by per-workload sums (`nodeml_process_X` ->
`nodeml_workload_X` without pid and comm); labels dropped, the series that then coincide
merged. Merging sums values (counters and gauges of amounts add up), takes the maximum of
`_info` series and of summary quantiles, and leaves out series that cannot be merged
(start times).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric

PER_PROCESS_MODES = ("series", "workload", "both")
DEFAULT_MAX_PROCESSES = 256
PROCESS_PREFIX = "nodeml_process_"
WORKLOAD_PREFIX = "nodeml_workload_"
WORKLOAD_INFO = "nodeml_workload_info"
PROCESS_LABELS = ("pid", "comm")
OTHER = "other"
# Labels an `other` series keeps: where the processes ran and what was measured, not whose.
_OTHER_KEEPS = frozenset({"gpu", "uuid", "gpu_instance", "compute_instance", "mode", "kind"})
_NOT_ADDITIVE = frozenset({"nodeml_process_start_time_seconds"})
# Processes ranked for the cap by these families' values, largest first, then by pid.
_RANK_BY = ("nodeml_process_gpu_memory_bytes", "nodeml_process_resident_memory_bytes")


@dataclass(frozen=True, slots=True)
class MetricsPolicy:
    """What the operator asked for; the defaults change nothing but the process cap."""

    drop_labels: tuple[str, ...] = ()
    drop_families: tuple[str, ...] = ()
    per_process: str = "series"
    max_processes: int = DEFAULT_MAX_PROCESSES


def _is_process_family(name: str) -> bool:
    return name.startswith(PROCESS_PREFIX) or name == WORKLOAD_INFO


def _exposed_names(family: Metric) -> tuple[str, ...]:
    return (family.name, family.name + "_total") if family.type == "counter" else (family.name,)


def drop_families(families: Iterable[Metric], globs: Sequence[str]) -> list[Metric]:
    """Families whose name (a counter's with or without `_total`) matches no glob."""
    return [
        f
        for f in families
        if not any(fnmatch.fnmatchcase(n, g) for n in _exposed_names(f) for g in globs)
    ]


def _merge(
    family: Metric,
    name: str,
    series: Iterable[tuple[str, Mapping[str, str], float]],
) -> Metric | None:
    """A family `name` holding `series` (sample name, labels, value), coinciding ones merged.

    None when series of a family that cannot be merged (start times) coincide.
    """
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    take_max = name.endswith("_info")
    for sample_name, labels, value in series:
        key = (sample_name, tuple(sorted(labels.items())))
        if key not in merged:
            merged[key] = value
        elif family.name in _NOT_ADDITIVE:
            return None
        elif take_max or "quantile" in labels:
            merged[key] = max(merged[key], value)
        else:
            merged[key] += value
    out = Metric(name, family.documentation, family.type, family.unit)
    for (sample_name, pairs), value in merged.items():
        out.add_sample(name + sample_name[len(family.name) :], dict(pairs), value)
    return out


def drop_labels(family: Metric, labels: Sequence[str], name: str | None = None) -> Metric | None:
    """`family` (renamed to `name`) without `labels`; None when it cannot be merged."""
    dropped = set(labels)
    return _merge(
        family,
        name or family.name,
        ((s.name, {k: v for k, v in s.labels.items() if k not in dropped}, s.value)
         for s in family.samples),
    )  # fmt: skip


def _ranked_pids(families: Sequence[Metric]) -> list[str]:
    """Pids of per-process series, the biggest GPU (then host) memory users first."""
    weight: dict[str, list[float]] = {}
    for f in families:
        if not _is_process_family(f.name):
            continue
        for s in f.samples:
            pid = s.labels.get("pid")
            if pid is None or pid == OTHER:
                continue
            w = weight.setdefault(pid, [0.0] * len(_RANK_BY))
            if f.name in _RANK_BY:
                w[_RANK_BY.index(f.name)] += s.value
    return sorted(weight, key=lambda p: ([-x for x in weight[p]], int(p) if p.isdigit() else 0, p))


def cap_processes(families: Sequence[Metric], limit: int) -> tuple[list[Metric], int]:
    """Per-process series of the pids beyond `limit` folded into `pid="other"` series.

    Returns the families and how many series were folded away. `nodeml_workload_info` of
    the folded pids is dropped (a join key summed means nothing).
    """
    pids = _ranked_pids(families)
    if len(pids) <= limit:
        return list(families), 0
    keep = set(pids[:limit])
    folded = 0
    out = []
    for f in families:
        if not _is_process_family(f.name):
            out.append(f)
            continue
        series = []
        for s in f.samples:
            pid = s.labels.get("pid")
            if pid is None or pid in keep:
                series.append((s.name, s.labels, s.value))
                continue
            folded += 1
            if f.name == WORKLOAD_INFO or f.name in _NOT_ADDITIVE:
                continue
            labels = {k: v for k, v in s.labels.items() if k in _OTHER_KEEPS}
            series.append((s.name, {**labels, "pid": OTHER}, s.value))
        merged = _merge(f, f.name, series)
        if merged is not None:
            out.append(merged)
    return out, folded


def per_workload(families: Sequence[Metric], mode: str) -> list[Metric]:
    """Per-process families as `mode` asks: as they are, per-workload sums, or both."""
    if mode == "series":
        return list(families)
    out = []
    for f in families:
        if not _is_process_family(f.name):
            out.append(f)
            continue
        if f.name == WORKLOAD_INFO:
            # The info keeps its name: per workload it joins a workload to the GPUs it holds.
            if mode == "both":
                out.append(f)
            elif (merged := drop_labels(f, PROCESS_LABELS)) is not None:
                out.append(merged)
            continue
        if mode == "both":
            out.append(f)
        summed = drop_labels(f, PROCESS_LABELS, WORKLOAD_PREFIX + f.name[len(PROCESS_PREFIX) :])
        if summed is not None:
            out.append(summed)
    return out


def apply_policy(families: Sequence[Metric], policy: MetricsPolicy) -> tuple[list[Metric], int]:
    """The families the policy lets through, and how many series the process cap folded."""
    out = drop_families(families, policy.drop_families)
    out, folded = cap_processes(out, policy.max_processes)
    out = per_workload(out, policy.per_process)
    if policy.drop_labels:
        out = [m for f in out if (m := drop_labels(f, policy.drop_labels)) is not None]
    return out, folded


class CardinalityLimiter:
    """Applies the current policy every tick and counts what the process cap folded."""

    def __init__(self, policy: MetricsPolicy | None = None) -> None:
        self.policy = policy or MetricsPolicy()
        self.dropped_total = 0

    def apply(self, families: Sequence[Metric]) -> list[Metric]:
        """The tick's families under the policy, with nodeml_series_dropped_total added."""
        out, folded = apply_policy(families, self.policy)
        self.dropped_total += folded
        counter = CounterMetricFamily(
            "nodeml_series_dropped",
            'Per-process series folded into pid="other" series because more processes than '
            "metrics.max_processes were exposed, counted once per tick they were folded.",
            labels=["reason"],
        )
        counter.add_metric(["max_processes"], self.dropped_total)
        return [*out, counter]


def series_per_scope(text: str) -> dict[str, tuple[int, int]]:
    """Series of an exposition by what they multiply with: (series, distinct owners).

    Scopes: `process` (a `pid` label), `target` (a `target` label), `gpu` (a `gpu` label),
    and `node` (the rest, once per agent); owners are the distinct pids, targets, GPUs.
    """
    from prometheus_client.parser import text_string_to_metric_families

    series: dict[str, int] = {"process": 0, "target": 0, "gpu": 0, "node": 0}
    owners: dict[str, set[str]] = {k: set() for k in series}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            for scope, label in (("process", "pid"), ("target", "target"), ("gpu", "gpu")):
                if label in s.labels:
                    owners[scope].add(s.labels[label])
                    break
            else:
                scope = "node"
            series[scope] += 1
    return {k: (n, len(owners[k]) or 1) for k, n in series.items()}

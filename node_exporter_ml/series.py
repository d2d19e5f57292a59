"""Tables of series: metric families declared once, then filled from rows of one tick's data.

Every collector declares each family it exports as a `Series` over a row type (a GPU sample,
a process, a cgroup, a pod, a serving model): name, kind, HELP, unit, and how a row gives its
value. `table_families` turns labelled rows and a table into fresh metric families, one per
series in table order, samples in row order; a row whose value is None gives no sample (not
0, not NaN). Rows of several kinds (serving's targets, scrape errors and models) make several
tables, yielded in the order of the exposition; a family without samples is still returned,
for the collector to keep or leave out.

    DEVICE = (Series[GpuSample]("nodeml_gpu_power_watts", "gauge", "Board power draw.",
                                lambda d: d.power_watts),)
    table_families(DEVICE, [({"gpu": "0", "uuid": "GPU-a"}, sample)])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

R = TypeVar("R")

Kind = Literal["gauge", "counter"]
Labelled = tuple[Mapping[str, str], R]  # a row with the labels of its series


# No slots: `Series[Row](...)` sets __orig_class__, which a frozen slotted class refuses with a
# TypeError (a frozen one without slots raises the AttributeError typing expects and ignores).
@dataclass(frozen=True)
class Series(Generic[R]):
    """One metric family of a table and how a row of type R gives its samples.

    A row gives one sample, `value(row)`, labelled with the row's labels. A family with a
    label dimension of its own (a CPU mode, an ECC counter kind) names it in `labels` and
    gives `each(row)` instead: (values of `labels`, value) pairs, added after the row's labels.
    A counter's name ends in `_total`, as its samples do.
    """

    name: str
    kind: Kind
    help: str
    value: Callable[[R], float | None] | None = None
    labels: tuple[str, ...] = ()
    each: Callable[[R], Iterable[tuple[Sequence[str], float | None]]] | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        """Exactly one of `value` and `each`; `labels` only with `each`."""
        if (self.value is None) == (self.each is None):
            raise ValueError(f"{self.name}: give value or each")
        if self.labels and self.each is None:
            raise ValueError(f"{self.name}: labels need each")

    def family(self) -> Metric:
        """A fresh, empty metric family for this series."""
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, unit=self.unit)
        return GaugeMetricFamily(self.name, self.help, unit=self.unit)

    def fill(self, family: Metric, rows: Iterable[Labelled[R]]) -> None:
        """Add the samples of `rows` to `family` (None values are skipped).

        What `add_sample` does, without a call per sample: a node with 8 GPUs x 64
        processes has thousands of rows a tick (bench/nvml_tick.py).
        """
        name = sample_name(family)
        add = family.add_sample
        if self.each is None:
            get = self.value
            assert get is not None  # __post_init__: one of the two
            for labels, row in rows:
                value = get(row)
                if value is not None:
                    add(name, dict(labels), float(value))
            return
        for labels, row in rows:
            for values, value in self.each(row):
                if value is not None:
                    own = dict(zip(self.labels, values, strict=True))
                    add(name, {**labels, **own}, float(value))


def sample_name(family: Metric) -> str:
    """The name a family's samples carry: a counter's gets `_total`."""
    return family.name + ("_total" if family.type == "counter" else "")


def add_sample(family: Metric, labels: Mapping[str, str], value: float) -> None:
    """Add one series to `family` with its own label set (the labels of one row).

    Label sets may differ between series of one family: a process in a pod carries
    namespace/pod/container, one on bare metal carries unit, one unattributed neither.
    """
    family.add_sample(sample_name(family), dict(labels), float(value))


def table_families(table: Iterable[Series[R]], rows: Iterable[Labelled[R]]) -> list[Metric]:
    """One fresh family per series of `table`, in table order, empty ones included."""
    rows = list(rows)
    out = []
    for series in table:
        family = series.family()
        series.fill(family, rows)
        out.append(family)
    return out

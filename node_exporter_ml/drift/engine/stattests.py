"""Evidently's drift tests, re-implemented on numpy arrays (pure functions, no pandas).

Every test takes the cleaned reference and current values of one column (missing values and
+-inf already dropped) and returns a score: a p-value or a distance, computed as Evidently
0.7.23 computes it (docs/drift-engine.md), so scores agree to floating-point noise.
`STATTESTS` holds each test's Evidently id, display name, the column types it accepts, its
default threshold and the direction of its verdict.

This module imports numpy at import time (the package imports the module on first use only),
and each test imports the part of scipy it needs when it first runs: the default tests for a
large reference (Wasserstein, Jensen-Shannon) need numpy alone, chi-square and Z need
`scipy.special` (about 25 MiB), KS and the other p-value tests `scipy.stats` (about 80 MiB).
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ColumnKind = Literal["num", "cat"]
Direction = Literal["p<=", "p<", "d>=", "d>"]
Array = NDArray[Any]


_WARNINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence scipy's expected warnings (capped p-values, exact-to-asymptotic fallbacks).

    `warnings.catch_warnings` saves and restores the process-wide filters, so two threads
    using it at once could leave them changed; the lock keeps our own uses from overlapping.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class Sample:
    """The cleaned values of one column on both sides, with what several tests share.

    Sorting and label counting are computed once, on first use, and reused by the test
    selection and the test itself.
    """

    def __init__(self, reference: Array, current: Array) -> None:
        self.reference = reference
        self.current = current
        self._labels: tuple[list[Any] | Array, Array, Array] | None = None
        self._sorted: tuple[Array, Array] | None = None

    @property
    def n_ref(self) -> int:
        """The number of reference values."""
        return int(self.reference.shape[0])

    @property
    def n_cur(self) -> int:
        """The number of current values."""
        return int(self.current.shape[0])

    @property
    def numeric(self) -> bool:
        """True when both sides are numeric arrays (int, uint, float or bool)."""
        return self.reference.dtype.kind in "iufb" and self.current.dtype.kind in "iufb"

    def sorted(self) -> tuple[Array, Array]:
        """Both sides sorted (numeric samples only)."""
        if self._sorted is None:
            self._sorted = (np.sort(self.reference), np.sort(self.current))
        return self._sorted

    def labels(self) -> tuple[list[Any] | Array, Array, Array]:
        """The distinct values of both sides and their counts on each side, aligned.

        Numeric labels are sorted; others are in first-seen order (reference, then current).
        Values compare as pandas compares them: 1, 1.0 and True are one label.
        """
        if self._labels is None:
            self._labels = _label_counts(self.reference, self.current)
        return self._labels

    def n_unique(self, cap: int) -> int:
        """The number of distinct values of both sides together, or any number > cap above it.

        Pass the largest count the caller distinguishes; past it the count may stop early.
        """
        if self._labels is not None or not self.numeric:
            return len(self.labels()[0])
        ref, cur = self.sorted()
        distinct_ref = _distinct_sorted(ref)
        if distinct_ref.shape[0] > cap:
            return int(distinct_ref.shape[0])
        distinct_cur = _distinct_sorted(cur)
        if distinct_cur.shape[0] > cap:
            return int(distinct_cur.shape[0])
        return int(np.union1d(distinct_ref, distinct_cur).shape[0])


def _distinct_sorted(values: Array) -> Array:
    if values.shape[0] == 0:
        return values
    keep = np.empty(values.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _label_counts(reference: Array, current: Array) -> tuple[list[Any] | Array, Array, Array]:
    if reference.dtype.kind in "iufb" and current.dtype.kind in "iufb":
        kinds = {reference.dtype.kind, current.dtype.kind}
        if kinds <= {"i", "b"}:
            common: Any = np.int64
        elif kinds <= {"u", "b"}:
            common = np.uint64
        else:
            common = np.float64
        ref_u, ref_n = np.unique(reference.astype(common, copy=False), return_counts=True)
        cur_u, cur_n = np.unique(current.astype(common, copy=False), return_counts=True)
        labels = np.union1d(ref_u, cur_u)
        ref_counts = np.zeros(labels.shape[0], dtype=np.int64)
        cur_counts = np.zeros(labels.shape[0], dtype=np.int64)
        ref_counts[np.searchsorted(labels, ref_u)] = ref_n
        cur_counts[np.searchsorted(labels, cur_u)] = cur_n
        return labels, ref_counts, cur_counts
    ref_counter = Counter(reference.tolist())
    cur_counter = Counter(current.tolist())
    keys = list(ref_counter)
    keys.extend(k for k in cur_counter if k not in ref_counter)
    return (
        keys,
        np.array([ref_counter.get(k, 0) for k in keys], dtype=np.int64),
        np.array([cur_counter.get(k, 0) for k in keys], dtype=np.int64),
    )


def _sorted_labels(labels: list[Any] | Array) -> list[Any]:
    if isinstance(labels, np.ndarray):
        return list(labels.tolist())
    try:
        return sorted(labels)
    except TypeError:  # mixed types: Evidently would fail; order by type, then value text
        return sorted(labels, key=lambda v: (type(v).__name__, str(v)))


# --- the default tests ------------------------------------------------------------------------


def ks(sample: Sample) -> float:
    """Two-sample two-sided Kolmogorov-Smirnov p-value, scipy's `ks_2samp` in `auto` mode.

    scipy switches from the exact distribution to the asymptotic one above 10,000 values on
    either side, and warns when the exact computation fails and it falls back: that warning
    is expected here and silenced.
    """
    from scipy import stats

    with _quiet():
        return float(stats.ks_2samp(sample.reference, sample.current).pvalue)


def chisquare(sample: Sample) -> float:
    """Chi-square goodness of fit of current counts against reference proportions (p-value).

    Expected counts are the reference counts scaled to the current size; a label seen only in
    current has an expected count of 0 and makes the statistic infinite, so p = 0 (scipy
    computes the same, with a divide-by-zero warning we do not emit).
    """
    from scipy import special

    _, ref_counts, cur_counts = sample.labels()
    k_norm = sample.n_cur / sample.n_ref
    expected = ref_counts * k_norm
    observed = cur_counts.astype(np.float64)
    if len(observed) < 2:
        return math.nan  # one label: zero degrees of freedom (Evidently issue #1929)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (observed - expected) ** 2 / expected
    statistic = float(terms.sum())
    return float(special.chdtrc(len(observed) - 1, statistic))


def z(sample: Sample) -> float:
    """Two-proportion pooled Z-test p-value, the smallest label against all others.

    The p-value is ``2 * (1 - Phi(|z|))``, which is exactly 0 past |z| ~ 8.3, as Evidently has it.
    """
    from scipy import special

    labels, ref_counts, cur_counts = sample.labels()
    if len(labels) == 1:
        return 1.0  # both sides hold one and the same value
    first = _sorted_labels(labels)[0]
    index = (
        int(np.searchsorted(labels, first))
        if isinstance(labels, np.ndarray)
        else labels.index(first)
    )
    n1, n2 = sample.n_ref, sample.n_cur
    p1 = float(n1 - int(ref_counts[index])) / n1
    p2 = float(n2 - int(cur_counts[index])) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_stat = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - special.ndtr(np.abs(z_stat))))


def wasserstein(sample: Sample) -> float:
    """First Wasserstein distance divided by max(population std of the reference, 0.001).

    scipy's `wasserstein_distance` integrates |F_r(x) - F_c(x)| dx over the pooled values.
    The same area is the integral of |Q_r(q) - Q_c(q)| dq over the quantile functions, which
    needs no merge of the two samples: Q_r steps at multiples of 1/n and Q_c at multiples of
    1/m, so in units of 1/lcm(n, m) every breakpoint is an integer and each piece's value
    indices come from integer division. Both sums add the same area in positive pieces; they
    agree to about 1e-15 relative, and this one costs half as much.
    """
    ref, cur = sample.sorted()
    n, m = int(ref.shape[0]), int(cur.shape[0])
    ref_step, cur_step = m // math.gcd(n, m), n // math.gcd(n, m)
    total = n * ref_step  # lcm(n, m)
    # Merge the breakpoints i*ref_step and j*cur_step without sorting: before i*ref_step come
    # i reference points and ceil(i*ref_step/cur_step) current ones (ties: reference first).
    i = np.arange(n, dtype=np.int64) * ref_step
    j = np.arange(m, dtype=np.int64) * cur_step
    points = np.empty(n + m, dtype=np.int64)
    points[np.arange(n, dtype=np.int64) + (i + cur_step - 1) // cur_step] = i
    points[np.arange(m, dtype=np.int64) + j // ref_step + 1] = j
    widths = np.diff(points, append=np.int64(total)).astype(np.float64)
    gaps = np.abs(
        ref.astype(np.float64, copy=False)[points // ref_step]
        - cur.astype(np.float64, copy=False)[points // cur_step]
    )
    w1 = float((gaps * widths).sum()) / total
    norm = max(float(np.std(sample.reference)), 0.001)
    return w1 / norm


def _shares(sample: Sample, kind: ColumnKind, fill_zeroes: bool) -> tuple[Array, Array]:
    """Evidently's `get_binned_data`: per-label shares, or sturges bins for wide numbers.

    A numerical column with more than 20 distinct reference values is binned on
    ``np.histogram_bin_edges(pooled, "sturges")``; otherwise each label is its own bin. With
    `fill_zeroes`, empty bins get (smallest non-zero share)/1e6 when that share is <= 1e-4,
    else 1e-4, as PSI and KL need.
    """
    if kind == "num" and sample.numeric and _distinct_count(sample.reference, 20) > 20:
        pooled = np.concatenate((sample.reference, sample.current))
        bins = np.histogram_bin_edges(pooled, bins="sturges")
        ref_pct = np.histogram(sample.reference, bins)[0] / sample.n_ref
        cur_pct = np.histogram(sample.current, bins)[0] / sample.n_cur
    else:
        _, ref_counts, cur_counts = sample.labels()
        ref_pct = ref_counts / sample.n_ref
        cur_pct = cur_counts / sample.n_cur
    if fill_zeroes:
        for pct in (ref_pct, cur_pct):
            smallest = float(pct[pct != 0].min())
            np.place(pct, pct == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return ref_pct, cur_pct


def _distinct_count(values: Array, cap: int) -> int:
    head = np.unique(values[: 4 * cap])
    if head.shape[0] > cap:
        return int(head.shape[0])
    return int(np.unique(values).shape[0])


def jensenshannon(sample: Sample, kind: ColumnKind) -> float:
    """Jensen-Shannon distance (natural log) between the two sides' shares, no smoothing.

    scipy's `distance.jensenshannon` step by step, in numpy (scipy.spatial is not loaded for
    it): renormalise, mix, and sum the relative entropies of each side to the mixture.
    """
    ref_pct, cur_pct = _shares(sample, kind, fill_zeroes=False)
    p = ref_pct / np.sum(ref_pct)
    q = cur_pct / np.sum(cur_pct)
    mix = (p + q) / 2.0
    return float(np.sqrt((_rel_entr(p, mix).sum() + _rel_entr(q, mix).sum()) / 2.0))


def _rel_entr(x: Array, y: Array) -> Array:
    """scipy.special.rel_entr for shares: x log(x / y) where x > 0, else 0 (y > 0 there)."""
    out = np.zeros_like(x)
    present = x > 0
    out[present] = x[present] * np.log(x[present] / y[present])
    return out


# --- the other tests --------------------------------------------------------------------------


def psi(sample: Sample, kind: ColumnKind) -> float:
    """Population stability index over the (zero-filled) shares."""
    ref_pct, cur_pct = _shares(sample, kind, fill_zeroes=True)
    return float(np.sum((ref_pct - cur_pct) * np.log(ref_pct / cur_pct)))


def kl_div(sample: Sample, kind: ColumnKind) -> float:
    """Kullback-Leibler divergence KL(reference || current) over the (zero-filled) shares."""
    from scipy import stats

    ref_pct, cur_pct = _shares(sample, kind, fill_zeroes=True)
    return float(stats.entropy(ref_pct, cur_pct))


def hellinger(sample: Sample, kind: ColumnKind) -> float:
    """Hellinger distance: per label for categorical columns, on sturges density bins else.

    Numerical bins are sturges edges over the set of distinct values of both sides.
    """
    if kind == "cat":
        _, ref_counts, cur_counts = sample.labels()
        coefficient = float(
            np.sum(np.sqrt((ref_counts / sample.n_ref) * (cur_counts / sample.n_cur)))
        )
    else:
        keys = np.union1d(np.unique(sample.reference), np.unique(sample.current))
        bins = np.histogram_bin_edges(keys, bins="sturges")
        h1 = np.histogram(sample.reference, bins=bins, density=True)[0]
        h2 = np.histogram(sample.current, bins=bins, density=True)[0]
        width = (bins.max() - bins.min()) / (len(bins) - 1)
        coefficient = float(np.sum(np.sqrt(h1 * h2) * width))
    return math.sqrt(1 - min(max(coefficient, 0.0), 1.0))


def anderson(sample: Sample) -> float:
    """k-sample Anderson-Darling significance level, scipy's, capped to [0.001, 0.25].

    scipy warns when it caps the p-value, and (from 1.17) about its `variant` argument.
    """
    from scipy import stats

    with _quiet():
        return float(stats.anderson_ksamp([sample.reference, sample.current])[2])


def cramer_von_mises(sample: Sample) -> float:
    """Two-sample Cramer-von Mises p-value: exact when both sides have <= 20 values.

    A port of Evidently's `_cvm_2samp` (itself a port of scipy's `cramervonmises_2samp`).
    """
    from scipy import stats

    x = np.sort(sample.reference)
    y = np.sort(sample.current)
    if x.size <= 1 or y.size <= 1:
        return math.nan
    nx, ny = len(x), len(y)
    ranks = stats.rankdata(np.concatenate([x, y]), method="average")
    u = nx * np.sum((ranks[:nx] - np.arange(1, nx + 1)) ** 2)
    u += ny * np.sum((ranks[nx:] - np.arange(1, ny + 1)) ** 2)
    k, n = nx * ny, nx + ny
    if max(nx, ny) <= 20:
        return float(_cvm_exact_pvalue(u, nx, ny))
    t = u / (k * n) - (4 * k - 1) / (6 * n)
    et = (1 + 1 / n) / 6
    vt = (n + 1.0) * (4 * k * n - 3 * (nx**2 + ny**2) - 2 * k)
    vt = vt / (45 * n**2 * 4 * k)
    tn = 1 / 6 + (t - et) / np.sqrt(45 * vt)
    if tn < 0.003:
        return 1.0
    return float(max(0, 1.0 - _cdf_cvm_inf(tn)))


def _cvm_exact_pvalue(s: Any, m: int, n: int) -> Any:
    lcm = np.lcm(m, n)
    a = lcm // m
    b = lcm // n
    mn = m * n
    zeta = lcm**2 * (m + n) * (6 * s - mn * (4 * mn - 1)) // (6 * mn**2)
    zeta_bound = lcm**2 * (m + n)
    combinations = math.factorial(m + n) / (math.factorial(m) * math.factorial(n))
    max_gs = max(zeta_bound, combinations)
    dtype = np.min_scalar_type(max_gs)
    gs = [np.array([[0], [1]], dtype=dtype)] + [np.empty((2, 0), dtype=dtype) for _ in range(m)]
    for u in range(n + 1):
        next_gs = []
        tmp = np.empty((2, 0), dtype=dtype)
        for v, g in enumerate(gs):
            vi, i0, i1 = np.intersect1d(tmp[0], g[0], return_indices=True)
            tmp = np.concatenate(
                [np.stack([vi, tmp[1, i0] + g[1, i1]]), np.delete(tmp, i0, 1), np.delete(g, i1, 1)],
                1,
            )
            tmp[0] += np.asarray((a * v - b * u) ** 2).astype(dtype)  # as scipy: numpy 2 casts
            next_gs.append(tmp)
        gs = next_gs
    value, freq = gs[m]
    return np.float64(np.sum(freq[value >= zeta]) / combinations)


def _cdf_cvm_inf(x: Any) -> Any:
    from scipy import special

    x = np.asarray(x)

    def term(x: Any, k: int) -> Any:
        u = np.exp(special.gammaln(k + 0.5) - special.gammaln(k + 1)) / (np.pi**1.5 * np.sqrt(x))
        y = 4 * k + 1
        q = y**2 / (16 * x)
        return u * np.sqrt(y) * np.exp(-q) * special.kv(0.25, q)

    total = np.zeros_like(x, dtype="float")
    cond = np.ones_like(x, dtype="bool")
    k = 0
    while np.any(cond):
        value = term(x[cond], k)
        total[cond] = total[cond] + value
        cond[cond] = np.abs(value) >= 1e-7
        k += 1
    return total


def energy(sample: Sample) -> float:
    """Energy distance, scipy's `energy_distance`."""
    from scipy import stats

    with _quiet():
        return float(stats.energy_distance(sample.reference, sample.current))


def epps_singleton(sample: Sample) -> float:
    """Epps-Singleton p-value; NaN when the pooled interquartile range is 0 (Evidently fails)."""
    from scipy import stats

    if stats.iqr(np.hstack((sample.reference, sample.current))) == 0:
        return math.nan
    with _quiet():
        return float(stats.epps_singleton_2samp(sample.reference, sample.current).pvalue)


def mann_whitney(sample: Sample) -> float:
    """One-sided Mann-Whitney U p-value, ``mannwhitneyu(reference, current, "less")``."""
    from scipy import stats

    with _quiet():
        return float(
            stats.mannwhitneyu(sample.reference, sample.current, alternative="less").pvalue
        )


def t_test(sample: Sample) -> float:
    """Student's two-sample t-test p-value with pooled variance."""
    from scipy import stats

    with _quiet():
        return float(stats.ttest_ind(sample.reference, sample.current).pvalue)


def tvd(sample: Sample, iterations: int = 1000) -> float:
    """Total variation distance permutation p-value, replaying Evidently's seeded permutations.

    Evidently seeds numpy's legacy generator with 0 and draws each permuted reference with
    ``np.random.choice(pooled, n, replace=False)``, which is ``permutation(len(pooled))[:n]``;
    the same stream here gives the same permutations without touching global random state.
    Distances are computed in floats as Evidently computes them, so a permuted distance equal
    to the observed one in exact arithmetic is counted as Evidently counts it: by rounding.
    Evidently sums string labels in hash order, so on tie-heavy small samples its own answer
    changes with PYTHONHASHSEED; this sums them in first-seen order, the same on every run.
    """
    labels, ref_counts, cur_counts = sample.labels()
    n, m = sample.n_ref, sample.n_cur
    observed = 0.5 * float(np.sum(np.abs(ref_counts / n - cur_counts / m)))
    codes = _codes(sample, labels)
    total = ref_counts + cur_counts
    generator = np.random.RandomState(0)
    n_labels = len(total)
    exceed = 0
    for _ in range(iterations):
        picked = np.bincount(codes[generator.permutation(n + m)[:n]], minlength=n_labels)
        permuted = 0.5 * float(np.sum(np.abs(picked / n - (total - picked) / m)))
        exceed += observed <= abs(permuted)
    return exceed / iterations


def _codes(sample: Sample, labels: list[Any] | Array) -> Array:
    if isinstance(labels, np.ndarray):
        pooled = np.concatenate((sample.reference, sample.current)).astype(labels.dtype)
        return np.searchsorted(labels, pooled)
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[v] for v in sample.reference.tolist() + sample.current.tolist()])


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatTest:
    """One drift test as Evidently names and judges it."""

    name: str
    display_name: str
    column_types: frozenset[str]
    default_threshold: float
    direction: Direction
    compute: Callable[[Sample, ColumnKind], float]

    def drifted(self, score: float, threshold: float) -> bool:
        """The verdict for a score; a NaN score is never drift."""
        if math.isnan(score):
            return False
        if self.direction == "p<=":
            return score <= threshold
        if self.direction == "p<":
            return score < threshold
        if self.direction == "d>=":
            return score >= threshold
        return score > threshold


def _plain(func: Callable[[Sample], float]) -> Callable[[Sample, ColumnKind], float]:
    return lambda sample, _kind: func(sample)


_NUM = frozenset({"num"})
_CAT = frozenset({"cat"})
_BOTH = frozenset({"num", "cat"})

STATTESTS: dict[str, StatTest] = {
    t.name: t
    for t in (
        StatTest("ks", "K-S p_value", _NUM, 0.05, "p<=", _plain(ks)),
        StatTest("chisquare", "chi-square p_value", _CAT, 0.05, "p<", _plain(chisquare)),
        StatTest("z", "Z-test p_value", _CAT, 0.05, "p<", _plain(z)),
        StatTest(
            "wasserstein", "Wasserstein distance (normed)", _NUM, 0.1, "d>=", _plain(wasserstein)
        ),
        StatTest("jensenshannon", "Jensen-Shannon distance", _BOTH, 0.1, "d>=", jensenshannon),
        StatTest("psi", "PSI", _BOTH, 0.1, "d>=", psi),
        StatTest("kl_div", "Kullback-Leibler divergence", _BOTH, 0.1, "d>=", kl_div),
        StatTest("hellinger", "Hellinger distance", _BOTH, 0.1, "d>=", hellinger),
        StatTest("anderson", "Anderson-Darling", _NUM, 0.1, "p<", _plain(anderson)),
        StatTest(
            "cramer_von_mises", "Cramer-von Mises", _NUM, 0.1, "p<=", _plain(cramer_von_mises)
        ),
        StatTest("ed", "Energy-distance", _NUM, 0.1, "d>", _plain(energy)),
        StatTest("es", "Epps-Singleton", _NUM, 0.05, "p<", _plain(epps_singleton)),
        StatTest("mannw", "Mann-Whitney U-rank test", _NUM, 0.05, "p<", _plain(mann_whitney)),
        StatTest("t_test", "t_test", _NUM, 0.05, "p<", _plain(t_test)),
        StatTest("TVD", "Total-Variation-Distance", _CAT, 0.1, "p<", _plain(tvd)),
    )
}

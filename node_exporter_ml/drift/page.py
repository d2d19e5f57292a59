"""The drift page: a model's report as one self-contained HTML document with inline SVG.

No scripts, no external resources: a verdict table, then per column the reference and current
distributions side by side (histograms over shared bins for numerical columns, bars per
category for categorical ones; the shares come with the result, from `drift.engine.histograms`),
then prediction and label figures. Presentation only: the drift web layer serves it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from node_exporter_ml.drift.engine.quality import SCHEMA_CHANGES

if TYPE_CHECKING:
    from node_exporter_ml.drift.service import ModelResult

REF_COLOUR = "#4c78a8"
CUR_COLOUR = "#f58518"


# --- SVG and HTML ---------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def histogram_svg(hist: Mapping[str, Any], width: int = 360, height: int = 140) -> str:
    """Reference and current shares as paired bars, with axis labels, as inline SVG.

    Without a ``reference`` list, the ``current`` shares are drawn alone, one bar per bin.
    """
    cur = list(hist["current"])
    ref = list(hist["reference"]) if "reference" in hist else None
    n = max(len(cur), 1)
    top = max([*(ref or []), *cur, 1e-12])
    pad_l, pad_b, pad_t = 36, 28, 8
    plot_w, plot_h = width - pad_l - 4, height - pad_b - pad_t
    slot = plot_w / n
    bar = max(slot / (1 if ref is None else 2) - 1, 0.5)
    series = (
        [("current", CUR_COLOUR)]
        if ref is None
        else [("reference", REF_COLOUR), ("current", CUR_COLOUR)]
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 4}" y2="{pad_t + plot_h}" '
        'stroke="#333"/>',
        f'<text x="2" y="{pad_t + 10}" font-size="10">{top:.0%}</text>',
    ]
    for i, shares in enumerate(zip(*([cur] if ref is None else [ref, cur]), strict=False)):
        x = pad_l + i * slot
        for j, (share, (name, colour)) in enumerate(zip(shares, series, strict=True)):
            h = plot_h * share / top
            parts.append(
                f'<rect x="{x + j * bar + 0.5:.1f}" y="{pad_t + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{name}: {share:.1%}</title></rect>"
            )
    if hist["kind"] == "num":
        edges = hist["edges"]
        for x, v in ((pad_l, edges[0]), (width - 4, edges[-1])):
            anchor = "start" if x == pad_l else "end"
            parts.append(
                f'<text x="{x}" y="{height - 8}" font-size="10" text-anchor="{anchor}">'
                f"{html.escape(_fmt(float(v)))}</text>"
            )
    else:
        for i, cat in enumerate(hist["categories"]):
            label = cat if len(cat) <= 8 else cat[:7] + "\u2026"
            parts.append(
                f'<text x="{pad_l + (i + 0.5) * slot:.1f}" y="{height - 8}" font-size="9" '
                f'text-anchor="middle">{html.escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def grid_svg(grid: Mapping[str, Any], size: int = 320) -> str:
    """Predicted (y) against actual (x) counts on a square grid, with the y = x diagonal."""
    edges = grid["edges"]
    n = max(len(edges) - 1, 1)
    cells = grid["cells"]
    top = max([c[2] for c in cells] or [1])
    pad = 40
    plot = size - pad - 8
    step = plot / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" role="img">',
        f'<rect x="{pad}" y="8" width="{plot}" height="{plot}" fill="none" stroke="#333"/>',
    ]
    for actual, predicted, count in cells:
        opacity = 0.2 + 0.8 * count / top
        parts.append(
            f'<rect x="{pad + actual * step:.1f}" y="{8 + plot - (predicted + 1) * step:.1f}" '
            f'width="{step:.1f}" height="{step:.1f}" fill="{CUR_COLOUR}" '
            f'fill-opacity="{opacity:.2f}"><title>{count}</title></rect>'
        )
    parts.append(
        f'<line x1="{pad}" y1="{8 + plot}" x2="{pad + plot}" y2="8" stroke="{REF_COLOUR}" '
        'stroke-width="2" stroke-dasharray="4 3"/>'
    )
    lo, hi = html.escape(_fmt(float(edges[0]))), html.escape(_fmt(float(edges[-1])))
    parts.extend(
        [
            f'<text x="{pad}" y="{size - 22}" font-size="10">{lo}</text>',
            f'<text x="{pad + plot}" y="{size - 22}" font-size="10" text-anchor="end">{hi}</text>',
            f'<text x="{pad + plot / 2:.0f}" y="{size - 6}" font-size="10" '
            'text-anchor="middle">actual</text>',
            f'<text x="2" y="{8 + plot}" font-size="10">{lo}</text>',
            f'<text x="2" y="18" font-size="10">{hi}</text>',
            f'<text x="12" y="{8 + plot / 2:.0f}" font-size="10" '
            f'transform="rotate(-90 12 {8 + plot / 2:.0f})" text-anchor="middle">predicted</text>',
            "</svg>",
        ]
    )
    return "".join(parts)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
table{border-collapse:collapse;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f0f0f0}
.drift{background:#fde2e1;font-weight:bold}.ok{background:#e3f4e1}
.cols{display:flex;flex-wrap:wrap;gap:16px}
.col{border:1px solid #ddd;padding:8px;border-radius:4px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}
.error{color:#a00}
"""


def _verdict(report: Mapping[str, Any]) -> str:
    dataset = report.get("dataset")
    if not dataset:
        return '<p class="error">Not evaluated: {}</p>'.format(
            html.escape(str(report.get("error") or "no result"))
        )
    cls = "drift" if dataset.get("dataset_drift") else "ok"
    verdict = "Dataset drift detected" if dataset.get("dataset_drift") else "No dataset drift"
    return (
        f'<p class="{cls}" style="padding:8px">{verdict}: '
        f"{dataset.get('number_of_drifted_columns')} of {dataset.get('number_of_columns')} "
        f"columns drifted (share {_fmt(dataset.get('share_of_drifted_columns'))}, "
        f"threshold {_fmt(dataset.get('drift_share'))}).</p>"
    )


def render_page(result: ModelResult) -> str:
    """The HTML page of one model's latest result."""
    report = result.report
    model = html.escape(result.model)
    window = report.get("window") or {}
    rows = []
    for name, col in sorted((report.get("columns") or {}).items()):
        cls = "drift" if col.get("drift_detected") else "ok"
        rows.append(
            f"<tr class='{cls}'><td>{html.escape(name)}</td><td>{_fmt(col.get('column_type'))}</td>"
            f"<td>{html.escape(str(col.get('stattest')))}</td><td>{_fmt(col.get('score'))}</td>"
            f"<td>{_fmt(col.get('threshold'))}</td><td>{_fmt(col.get('drift_detected'))}</td></tr>"
        )
    charts = []
    for name, hist in sorted(result.histograms.items()):
        charts.append(
            f"<div class='col'><div><b>{html.escape(name)}</b></div>{histogram_svg(hist)}</div>"
        )
    body = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Drift: {model}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Drift of model {model}</h1>",
        f"<p>Window: {_fmt(window.get('rows'))} observations "
        f"({html.escape(str(window.get('kind')))}"
        f" window of {_fmt(window.get('size'))}); reference: "
        f"{_fmt((report.get('reference') or {}).get('rows'))} rows; evaluated "
        f"{html.escape(_time(result.evaluated_at))}.</p>",
        _verdict(report),
    ]
    if rows:
        body.append(
            "<table><tr><th>column</th><th>type</th><th>test</th><th>score</th>"
            "<th>threshold</th><th>drift</th></tr>" + "".join(rows) + "</table>"
        )
    if charts:
        body.append(
            "<h2>Reference vs current</h2><p class='legend'>"
            f"<span style='background:{REF_COLOUR}'></span>reference"
            f"<span style='background:{CUR_COLOUR}'></span>current</p>"
            f"<div class='cols'>{''.join(charts)}</div>"
        )
    body.extend(_quality(report))
    body.extend(_predictions(report))
    body.extend(_labels(report))
    body.append("</body></html>")
    return "".join(body)


def _time(ts: float) -> str:
    import datetime

    if not ts:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _quality(report: Mapping[str, Any]) -> list[str]:
    quality = report.get("data_quality")
    if not isinstance(quality, Mapping) or not quality.get("columns"):
        return []
    out = [
        "<h2>Data quality</h2><table><tr><th>column</th><th>missing</th>"
        "<th>reference missing</th><th>out of range</th><th>unseen categories</th></tr>"
    ]
    for name, q in sorted(quality["columns"].items()):
        out.append(
            f"<tr><td>{html.escape(name)}</td><td>{_fmt(q.get('missing_share'))}</td>"
            f"<td>{_fmt(q.get('reference_missing_share'))}</td>"
            f"<td>{_fmt(q.get('out_of_range_share'))}</td>"
            f"<td>{_fmt(q.get('unseen_categories_share'))}</td></tr>"
        )
    out.append("</table>")
    schema = quality.get("schema") or {}
    changes = [
        f"{label}: {html.escape(', '.join(sorted(map(str, schema.get(key) or ()))))}"
        for label, key in SCHEMA_CHANGES
        if schema.get(key)
    ]
    if changes:
        out.append(f"<p class='error'>Schema changes: {'; '.join(changes)}.</p>")
    return out


def _predictions(report: Mapping[str, Any]) -> list[str]:
    pred = report.get("prediction") or {}
    out = []
    drift = pred.get("drift")
    if drift:
        out.append(
            "<h2>Prediction drift</h2><p>"
            f"{html.escape(str(drift.get('stattest_name') or drift.get('stattest')))} "
            f"{_fmt(drift.get('score'))}, "
            f"threshold {_fmt(drift.get('threshold'))}: "
            f"{'drift' if drift.get('drift_detected') else 'no drift'}.</p>"
        )
    conf = pred.get("confidence") or {}
    if conf.get("count"):
        ref_conf = pred.get("reference_confidence") or {}
        n, rn = conf["count"], ref_conf.get("count") or 0
        hist = {
            "kind": "num",
            "edges": conf["edges"],
            "current": [c / n for c in conf["counts"]],
            "reference": [c / rn for c in ref_conf["counts"]]
            if rn
            else [0.0] * len(conf["counts"]),
        }
        out.append(
            f"<h2>Confidence</h2><p>mean {_fmt(conf.get('mean'))} over {n} predictions</p>"
            + histogram_svg(hist)
        )
    return out


_REGRESSION_FIGURES = (
    ("mean_error", "mean error"),
    ("mae", "MAE"),
    ("rmse", "RMSE"),
    ("mape_ratio", "MAPE / 100"),
    ("r2", "R2"),
    ("max_abs_error", "max absolute error"),
)


def _regression_labels(labels: Mapping[str, Any]) -> list[str]:
    cells = "".join(f"<th>{name}</th>" for _, name in _REGRESSION_FIGURES)
    values = "".join(f"<td>{_fmt(labels.get(key))}</td>" for key, _ in _REGRESSION_FIGURES)
    out = [
        f"<h2>Labels</h2><p>{labels['count']} labelled predictions (error = prediction - "
        f"label)</p><table><tr>{cells}</tr><tr>{values}</tr></table>",
        "<div class='cols'>",
    ]
    grid = labels.get("predicted_vs_actual")
    if grid:
        out.append(f"<div class='col'><div><b>Predicted vs actual</b></div>{grid_svg(grid)}</div>")
    errors = labels.get("error_histogram")
    if errors and labels["count"]:
        hist = {
            "kind": "num",
            "edges": errors["edges"],
            "current": [c / labels["count"] for c in errors["counts"]],
        }
        out.append(
            "<div class='col'><div><b>Error (prediction - label)</b></div>"
            f"{histogram_svg(hist)}</div>"
        )
    out.append("</div>")
    return out


def _labels(report: Mapping[str, Any]) -> list[str]:
    labels = report.get("labels") or {}
    if not labels.get("count"):
        return []
    if labels.get("task") == "regression":
        return _regression_labels(labels)
    calibration = labels.get("calibration") or {}
    out = [
        f"<h2>Labels</h2><p>accuracy {_fmt(labels.get('accuracy'))}, macro precision "
        f"{_fmt(labels.get('precision_macro'))}, macro recall "
        f"{_fmt(labels.get('recall_macro'))}, macro F1 {_fmt(labels.get('f1_macro'))} over "
        f"{labels['count']} labelled predictions</p>",
    ]
    if calibration.get("count"):
        out.append(
            f"<p>expected calibration error {_fmt(calibration.get('error'))} over "
            f"{calibration['count']} labelled predictions with a confidence</p>"
        )
    out.append("<table><tr><th>class</th><th>precision</th><th>recall</th><th>support</th></tr>")
    for cls, m in sorted((labels.get("classes") or {}).items()):
        out.append(
            f"<tr><td>{html.escape(cls)}</td><td>{_fmt(m.get('precision'))}</td>"
            f"<td>{_fmt(m.get('recall'))}</td><td>{_fmt(m.get('support'))}</td></tr>"
        )
    out.append("</table>")
    confusion = labels.get("confusion") or []
    if confusion:
        out.append("<table><tr><th>actual</th><th>predicted</th><th>count</th></tr>")
        for c in confusion:
            out.append(
                f"<tr><td>{html.escape(str(c['actual']))}</td>"
                f"<td>{html.escape(str(c['predicted']))}</td><td>{c['count']}</td></tr>"
            )
        out.append("</table>")
    return out


def render_error(title: str, detail: str) -> str:
    """A small HTML error page."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(detail)}</p></body></html>"
    )

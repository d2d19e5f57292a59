"""Data drift: Evidently's default drift report, computed with numpy and scipy.

`evaluate(reference, current, **options)` returns the report the drift API serves. Importing
this package imports neither numpy nor scipy: they load on the first evaluation.

The subsystem's imports point one way: `web` (routes, the page, errors to HTTP) -> `service`
(lifecycle, threads, worker processes; `bodies`, `windowreport`) -> `store` (SQLite) ->
`engine` (pure).
"""

from node_exporter_ml.drift.engine.errors import DataError, OptionsError
from node_exporter_ml.drift.engine.report import evaluate, parse_options
from node_exporter_ml.drift.engine.table import Column, Table, as_table

__all__ = ["Column", "DataError", "OptionsError", "Table", "as_table", "evaluate", "parse_options"]

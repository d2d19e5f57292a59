"""The drift API's options: --drift.* and --state.dir, and the config file's `drift:` section.

--state.dir lives here because the drift store is the only state the agent keeps: nothing
else reads or writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from node_exporter_ml.options import (
    Section,
    YamlReader,
    duration_arg,
    existing_file,
    flag,
    seconds_default,
    yaml_key,
)


@dataclass(frozen=True, slots=True)
class DriftOptions:
    """The drift collector's options (flags, then the file's `drift:` keys)."""

    interval: float = flag(
        "--drift.interval",
        60.0,
        type=duration_arg,
        metavar="DURATION",
        help=f"how often stored models' drift is re-evaluated {seconds_default(60.0)}",
    )
    token_file: str | None = flag(
        "--drift.token-file",
        None,
        metavar="FILE",
        help="bearer token required by the drift API's write endpoints",
        check=existing_file,
    )
    state_dir: str = flag(
        "--state.dir",
        "/var/lib/node-exporter-ml",
        metavar="DIR",
        help="where the drift store (SQLite) keeps references and windows",
    )
    window_rows: int = yaml_key("window_rows", 10_000, YamlReader.integer)
    window_seconds: float | None = yaml_key("window_seconds", None, YamlReader.duration)
    max_body_bytes: int = yaml_key("max_body_bytes", 64 * 1024 * 1024, YamlReader.integer)
    max_rows: int = yaml_key("max_rows", 1_000_000, YamlReader.integer)
    max_columns: int = yaml_key("max_columns", 1_000, YamlReader.integer)
    max_models: int = yaml_key("max_models", 50, YamlReader.integer)
    max_features: int = yaml_key("max_features", 200, YamlReader.integer)


DRIFT_OPTIONS: Section[DriftOptions] = Section("drift", DriftOptions, file_key="drift")

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from node_exporter_ml.drift import Table, bodies
from node_exporter_ml.drift.bodies import Limits, split_reference
from node_exporter_ml.drift.engine.columnar import Blob, loads_columnar
from node_exporter_ml.drift.errors import DriftError
from node_exporter_ml.drift.store import pack_table, unpack_table
from node_exporter_ml.drift.web import ApiError, api_error


def _as_answered(parse):
    """`parse` with its domain errors turned into what the web layer answers (ApiError)."""

    @functools.wraps(parse)
    def wrapped(*args, **kwargs):
        try:
            return parse(*args, **kwargs)
        except DriftError as err:
            raise (api_error(err) or err) from err

    return wrapped


parse_json = _as_answered(bodies.parse_json)
parse_label_rows = _as_answered(bodies.parse_label_rows)
parse_observation_rows = _as_answered(bodies.parse_observation_rows)


def test_pack_roundtrip_keeps_types_and_values():
    table = Table.from_csv(
        b"f,i,b,s,o,big\n"
        b"1.5,1,true,x,true,18446744073709551615\n"
        b",2,false,,,1\n"
        b"inf,3,TRUE,z,false,2\n"
    )
    table.columns["m"] = Table.from_columns({"m": [1, "a", None]}).columns["m"]
    back = unpack_table(pack_table(table))
    assert back.n_rows == table.n_rows
    assert list(back.columns) == list(table.columns)
    for name, col in table.columns.items():
        other = back.columns[name]
        assert other.dtype == col.dtype, name
        assert other.values.dtype == col.values.dtype, name
        if col.values.dtype.kind == "f":
            np.testing.assert_array_equal(other.values, col.values)
        else:
            assert other.values.tolist() == col.values.tolist(), name


def test_split_reference_takes_out_predictions():
    table = Table.from_columns(
        {"x": [1.0, 2.0], "prediction": ["a", None], "confidence": [0.5, math.nan], "id": [1, 2]}
    )
    features, predictions, confidences = split_reference(table)
    assert list(features.columns) == ["x"]
    assert predictions == ["a", None]
    assert confidences is not None
    assert confidences[0] == 0.5
    assert math.isnan(confidences[1])


def test_parse_json_errors_name_the_place():
    with pytest.raises(ApiError, match="line 2 column 1"):
        parse_json(b'{"a":\n}')
    with pytest.raises(ApiError, match="nested too deeply"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    "body",
    [
        b'{"reference":{"columns":{"a":[1,2],"b":["x","\\ud800"]}}}',
        b'{"reference":{"columns":{"\\udc00":[1.5,null]}}}',
        b'{"columns":{"a":[1,2]},"options":{"note":"\\ud801"}}',
        '{"columns":{"a":["\ud800"]}}'.encode("utf-16", "surrogatepass"),
    ],
)
def test_parse_json_refuses_lone_surrogates_in_columnar_bodies(body):
    with pytest.raises(ApiError, match="lone surrogate"):
        parse_json(body, loads_columnar)
    with pytest.raises(ApiError, match="lone surrogate"):
        parse_json(Blob(bytearray(body)), loads_columnar)  # as the API sends it


@pytest.mark.parametrize("loads", [json.loads, loads_columnar])
def test_parse_json_of_a_blob_is_parse_json_of_its_bytes(loads):
    body = b' {"columns": {"a": [1, 2]}, "options": {"k": "\\u00e9"}}\n'
    blob = Blob(bytearray(body))
    assert str(parse_json(blob, loads)) == str(parse_json(body, loads))
    assert len(blob) == 0
    for empty in (b"", b" \n\t"):
        with pytest.raises(ApiError, match="the body is empty"):
            parse_json(Blob(empty), loads)


def test_parse_json_keeps_surrogate_pairs_in_columnar_bodies():
    value = parse_json(b'{"columns":{"a":[1,2],"b":["\\ud83d\\ude00",null]}}', loads_columnar)
    assert value["columns"]["b"].values.tolist() == ["\U0001f600", None]


def test_observations_in_columns_form():
    rows = parse_observation_rows(
        {"columns": {"x": [1, 2], "prediction": ["a", "b"], "id": [7, "k"]}}, Limits()
    )
    assert [(o.features, o.prediction, o.obs_id) for o in rows] == [
        ({"x": 1}, "a", "7"),
        ({"x": 2}, "b", "k"),
    ]
    with pytest.raises(ApiError, match="too many columns") as err:
        parse_observation_rows({"rows": [{"a": 1, "b": 2, "c": 3}]}, Limits(max_columns=2))
    assert err.value.status == 413


def test_repeated_label_ids_keep_the_last():
    labels = parse_label_rows(
        {"labels": [{"id": 1, "label": "a"}, {"id": "2", "label": 0}, {"id": "1", "label": "b"}]},
        Limits(),
    )
    assert labels == [("2", 0), ("1", "b")]

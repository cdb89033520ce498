"""Settings fingerprints: JSON round trip, and the check that names every difference."""

from __future__ import annotations

import json

import pytest

from common.utils import as_fingerprint, check_fingerprint


def test_fingerprint_compares_equal_after_a_json_round_trip():
    fp = as_fingerprint({"features": (4, 8), "lr": 1e-3, "nested": {"a": (1,)}})
    assert json.loads(json.dumps(fp)) == fp == {"features": [4, 8], "lr": 1e-3, "nested": {"a": [1]}}
    with pytest.raises(TypeError):
        as_fingerprint({"network": object()})


def test_check_names_source_each_difference_and_the_remedy():
    expected = {"a": 1, "b": [1, 2], "c": "x"}
    check_fingerprint(dict(expected), expected, "state.json")  # equal: no error
    check_fingerprint({"a": 1, "b": [9]}, expected, "state.json", keys=["a"])  # only the keys asked for
    with pytest.raises(ValueError) as e:
        check_fingerprint({"a": 2, "b": [1, 2]}, expected, "state.json", remedy="do this")
    differences = "a: expected 1, found 2; c: expected 'x', found None"
    assert str(e.value) == f"state.json: made with other settings ({differences}); do this"
    with pytest.raises(ValueError, match="state.json: expected a fingerprint .*a, b, c.*found none"):
        check_fingerprint(None, expected, "state.json")

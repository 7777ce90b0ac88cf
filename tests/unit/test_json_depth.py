"""The gateway's JSON depth bound: iterative, exact up to the limit, quick past it."""

from __future__ import annotations

from services.gateway.state import MAX_JSON_DEPTH, json_depth


def test_depth_counts_objects_and_arrays():
    assert json_depth(1) == json_depth("x") == json_depth(None) == 0
    assert json_depth({}) == json_depth([]) == 1
    assert json_depth({"a": [1, {"b": [2]}]}) == 4
    assert json_depth([[], [[[]]], {}]) == 4


def test_depth_past_the_limit_is_reported_without_walking_it_all():
    deep: list = []
    node = deep
    for _ in range(100_000):  # far past Python's recursion limit: the walk must be iterative
        child: list = []
        node.append(child)
        node = child
    assert MAX_JSON_DEPTH < json_depth(deep) <= MAX_JSON_DEPTH + 1

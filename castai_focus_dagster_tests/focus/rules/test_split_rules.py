"""The split-mode rules pass a correct split table and catch each kind of breakage."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from castai_focus_dagster.focus.rules.conservation import check_split_conservation
from castai_focus_dagster.focus.rules.split import check_split_allocation
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster_tests.focus.test_focus_split import (
    CLUSTER,
    audits,
    report_table,
    split,
    two_workloads,
)


def test_split_audits_detect_broken_tables() -> None:
    reports = {CLUSTER: report_table([{"cpuCostOnDemand": 1.0, "cpuCountOnDemand": 10.0}])}
    good = split(two_workloads(), reports)
    assert audits(good, reports) == []

    def replaced(name: str, values: list[Any]) -> pa.Table:
        index = good.schema.get_field_index(name)
        return good.set_column(
            index, good.schema.field(index), pa.array(values, good.schema.field(index).type)
        )

    def failed(table: pa.Table) -> set[str]:
        return {r.rule for r in check_split_allocation(table) if not r.passed}

    ratio_text = good["AllocatedMethodDetails"].to_pylist()
    ratio_text[0] = ratio_text[0].replace('"AllocatedRatio":0.4', '"AllocatedRatio":0.5')
    assert failed(replaced("AllocatedMethodDetails", ratio_text)) >= {"split-ratios-sum-to-one"}
    billed = good["BilledCost"].to_pylist()
    assert failed(replaced("BilledCost", [billed[0] + 0.01, *billed[1:]])) == {"split-rows-sum-to-origin"}
    names = good["ChargeDescription"].to_pylist()
    assert failed(replaced("ChargeDescription", ["other", *names[1:]])) == {"split-dimensions-match-origin"}
    tags = good["AllocatedTags"].to_pylist()
    clash = json.dumps({"env": "x"})
    assert failed(replaced("AllocatedTags", [clash, *tags[1:]])) == {"split-allocated-tags-disjoint"}
    ids = good["AllocatedResourceId"].to_pylist()
    assert "split-unallocated-rows" in failed(replaced("AllocatedResourceId", [ids[0], ids[0], ids[2]]))
    assert "split-unallocated-rows" in failed(replaced("AllocatedResourceId", [None, *ids[1:]]))
    conservation = {
        "idle row dropped": check_split_conservation(good.slice(0, 2), reports),
        "report missing": check_split_conservation(good, {}),
        "rows missing": check_split_conservation(FOCUS_SCHEMA.empty_table(), reports),
    }
    assert [name for name, result in conservation.items() if result.passed] == []
    assert all(CLUSTER in result.message for result in conservation.values())
    assert "no cluster cost report" in conservation["report missing"].message
    assert "no row was exported" in conservation["rows missing"].message

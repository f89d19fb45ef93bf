"""The Grafana dashboard (`config/grafana/songserve.json`) loads and queries only real metrics.

Every metric a query names must be exported: one of songserve's own (`serve.metrics`), or one
Ray Serve defines in the installed Ray. Every songserve metric has a panel, and every panel says
which question it answers and which knob to turn.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from serve.metrics import METRIC_NAMES

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "songserve.json"
# What Prometheus adds to a Ray metric's name: the `ray_` prefix, and a suffix per series kind.
SERIES_SUFFIX = re.compile(r"_(bucket|sum|count|total)$")


def ray_serve_metric_names() -> set[str]:
    """Every `serve_*` metric name the installed Ray Serve creates."""
    import ray.serve

    source = Path(ray.serve.__file__).parent
    names: set[str] = set()
    for path in source.rglob("*.py"):
        names |= set(re.findall(r"\"(serve_[a-z_]+)\"", path.read_text(encoding="utf-8")))
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def queried_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: every `ray_…` identifier."""
    return set(re.findall(r"\bray_[a-z_]+\b", expr))


def test_the_dashboard_is_importable_grafana_json(dashboard: dict) -> None:
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24 and position["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for opening, closing in ("()", "{}", "[]"):
                assert expr.count(opening) == expr.count(closing), expr
            assert 'application=~"$application"' in expr, expr
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_query_names_an_exported_metric(dashboard: dict) -> None:
    ours = {f"ray_{name}" for name in METRIC_NAMES}
    serves = {f"ray_{name}" for name in ray_serve_metric_names()}
    assert "ray_serve_deployment_queued_queries" in serves  # the scan found Serve's metrics
    unknown = {
        metric: panel["title"]
        for panel in panels(dashboard)
        for target in panel["targets"]
        for metric in queried_metrics(target["expr"])
        if SERIES_SUFFIX.sub("", metric) not in ours | serves
        and metric not in ours | serves  # a gauge whose own name ends like a suffix
    }
    assert not unknown, f"queries name metrics nobody exports: {unknown}"


def test_every_songserve_metric_has_a_panel(dashboard: dict) -> None:
    charted = {
        SERIES_SUFFIX.sub("", metric)
        for panel in panels(dashboard)
        for target in panel["targets"]
        for metric in queried_metrics(target["expr"])
    }
    missing = {name for name in METRIC_NAMES if f"ray_{name}" not in charted}
    # Songs per LoRA use are counted for the decoder's own tests; the panels chart render speed.
    assert missing <= {"songserve_decoder_songs"}, missing


def test_every_panel_says_its_question_and_knob(dashboard: dict) -> None:
    for panel in panels(dashboard):
        question, _, knob = panel["description"].partition(" Knob: ")
        assert question.endswith(("?", ".")) and knob, panel["title"]

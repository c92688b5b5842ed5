"""The chart's alerts (issue 9): the PrometheusRule rendered by the real `helm template`, its groups
checked and unit-tested by the real promtool (rules_test.yaml), every alert tested both firing and
not firing, linked to its runbook section, reading only series that exist, with its thresholds and
durations from the values; and the chart's values.schema.json enforced by helm.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts.chart_rules import (
    CHART,
    METRIC_NAME,
    RUNBOOKS,
    SCHEMA,
    Json,
    alerts_of,
    exported_names,
    helm_template,
    prometheus_rules,
    promtool,
    runbook_sections,
    the_rule,
    unit_test_cases,
    write_rules_file,
)

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="module")
def rule(tmp_path_factory: pytest.TempPathFactory) -> Json:
    """The PrometheusRule as the chart's defaults render it, once switched on."""
    return the_rule(tmp_path_factory.mktemp("render"), {})


def test_promtool_checks_the_rules_and_their_unit_tests_pass(rule: Json, tmp_path: Path) -> None:
    rules = write_rules_file(rule, tmp_path)
    checked = promtool("check", "rules", "--lint=all", "--lint-fatal", str(rules), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts_of(rule))} rules found" in checked.stdout
    tested = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_unit_tests_fail_when_a_threshold_moves(rule: Json, tmp_path: Path) -> None:
    """The promtool cases pin the thresholds: rules rendered from other values fail them."""
    moved = the_rule(tmp_path, {"alerts": {"relayDeferring": {"ratio": 0.5}}})
    write_rules_file(moved, tmp_path / "moved")
    tested = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path / "moved")
    assert tested.returncode != 0
    assert "alertname: MailtrainRelayDeferring" in tested.stdout + tested.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not(rule: Json) -> None:
    names = set(alerts_of(rule))
    cases = unit_test_cases()
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert len(names) >= 8  # the seven, the relay's two ways counted apart
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"
    assert firing | silent <= names, "cases of alerts that do not exist"


def test_every_alert_links_its_section_of_the_runbooks(rule: Json) -> None:
    base = DEFAULTS["prometheusRule"]["runbookBaseUrl"]
    assert base.endswith("/docs/runbooks.md")
    sections = runbook_sections()
    for name, alert in alerts_of(rule).items():
        url, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert url == base, name
        assert anchor == name.lower(), name
        assert anchor in sections, f"docs/runbooks.md has no section #{anchor}"
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        assert alert["labels"]["severity"] in ("critical", "warning"), name
    # and no section for an alert that is not there any more
    documented = {anchor for anchor in sections if anchor.startswith("mailtrain")}
    assert documented == {name.lower() for name in alerts_of(rule)}


def test_every_runbook_section_says_what_it_means_how_to_confirm_and_how_to_fix(rule: Json) -> None:
    sections = runbook_sections()
    for name in alerts_of(rule):
        text = sections[name.lower()]
        meaning, confirm, fix = (text.find(f"**{part}.**") for part in ("Meaning", "Confirm", "Fix"))
        assert 0 <= meaning < confirm < fix, f"{name}: Meaning, Confirm, Fix in that order"
        how = text[confirm:fix]
        assert "```promql" in how and "```console" in how and "kubectl " in how, name


def test_the_rules_and_runbooks_use_only_series_the_operator_and_the_senders_export(rule: Json) -> None:
    exported = exported_names()
    used_by_rules = {m for a in alerts_of(rule).values() for m in METRIC_NAME.findall(a["expr"])}
    assert used_by_rules - exported == set()
    assert "mailtrain_operator_campaign_last_progress_timestamp_seconds" in used_by_rules
    used_by_runbooks = set(METRIC_NAME.findall(RUNBOOKS.read_text()))
    assert used_by_runbooks - exported == set()


# Values other than the defaults, and what each alert must then say: (alert, values, in its expr, for).
CUSTOM: dict[str, tuple[str, Json, list[str], str]] = {
    "senderPoolBelowDesired": ("MailtrainSenderPoolBelowDesired", {"missingProcesses": 2}, [">= 2"], "20m"),
    "campaignStalled": ("MailtrainCampaignStalled", {"minutes": 30}, ["> 1800"], "2m"),
    "relayUnreachable": ("MailtrainRelayUnreachable", {"window": "3m"}, ["[3m]"], "7m"),
    "relayDeferring": (
        "MailtrainRelayDeferring",
        {"ratio": 0.25, "window": "15m"},
        ["> 0.25", "[15m]"],
        "11m",
    ),
    "permanentFailures": (
        "MailtrainPermanentFailuresHigh",
        {"ratio": 0.02, "minFailures": 50, "window": "30m"},
        ["> 0.02", ">= 50", "[30m]"],
        "9m",
    ),
    "senderRedisUnreachable": ("MailtrainSenderRedisUnreachable", {"window": "1m"}, ["[1m]"], "4m"),
    "operatorReconcileErrors": (
        "MailtrainOperatorReconcileErrors",
        {"errors": 9, "window": "20m"},
        ["> 9", "[20m]"],
        "6m",
    ),
    "operatorDown": ("MailtrainOperatorDown", {"selector": 'job="ops"'}, ['{job="ops"}'], "8m"),
}


def test_thresholds_durations_and_labels_come_from_values(rule: Json, tmp_path: Path) -> None:
    assert set(CUSTOM) == set(DEFAULTS["alerts"])  # one block per alert, each exercised here
    values: dict[str, Any] = {
        key: {**settings, "for": duration, "severity": "page"}
        for key, (_, settings, _, duration) in CUSTOM.items()
    }
    custom = the_rule(
        tmp_path,
        {
            "alerts": values,
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "alertLabels": {"team": "mail"},
                "runbookBaseUrl": "https://docs.example/runbooks.html",
            },
        },
    )
    assert custom["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    defaults, changed = alerts_of(rule), alerts_of(custom)
    for name, expected_expr, duration in ((n, e, d) for n, _, e, d in CUSTOM.values()):
        for part in expected_expr:
            assert part in changed[name]["expr"], (name, part)
            assert part not in defaults[name]["expr"], (name, part)  # not the default by chance
        assert changed[name]["for"] == duration != defaults[name]["for"], name
        assert changed[name]["labels"] == {"team": "mail", "severity": "page"}, name
        assert (
            changed[name]["annotations"]["runbook_url"]
            == f"https://docs.example/runbooks.html#{name.lower()}"
        )
    checked = promtool("check", "rules", str(write_rules_file(custom, tmp_path / "custom")), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rule_is_rendered_only_when_enabled_and_without_the_alerts_switched_off(tmp_path: Path) -> None:
    assert DEFAULTS["prometheusRule"]["enabled"] is False
    assert prometheus_rules(tmp_path, {}) == []
    partial = the_rule(
        tmp_path, {"alerts": {"relayDeferring": {"enabled": False}, "operatorDown": {"enabled": False}}}
    )
    names = set(alerts_of(partial))
    assert "MailtrainRelayDeferring" not in names and "MailtrainOperatorDown" not in names
    assert "MailtrainRelayUnreachable" in names and len(names) == len(CUSTOM) - 2
    everything_off = {key: {"enabled": False} for key in CUSTOM}
    assert prometheus_rules(tmp_path, {"prometheusRule": {"enabled": True}, "alerts": everything_off}) == []


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"alerts": {"relayDeferring": {"ratio": 1.5}}}, "at '/alerts/relayDeferring/ratio'"),
        ({"alerts": {"campaignStalled": {"for": "5 minutes"}}}, "at '/alerts/campaignStalled/for'"),
        ({"alerts": {"campaignStalled": {"minutes": 0}}}, "at '/alerts/campaignStalled/minutes'"),
        ({"alerts": {"permanentFailures": {"window": "0"}}}, "at '/alerts/permanentFailures/window'"),
        ({"alerts": {"operatorDown": {"treshold": 3}}}, "'treshold' not allowed"),
        ({"alerts": {"newAlert": {"enabled": True}}}, "'newAlert' not allowed"),
        ({"prometheusRule": {"alertLabels": {"severity": "page"}}}, "propertyName 'severity'"),
        ({"prometheusRule": {"runbookBaseUrl": "docs/runbooks.md"}}, "at '/prometheusRule/runbookBaseUrl'"),
        ({"prometheusRule": {"labels": {"release": 1}}}, "at '/prometheusRule/labels/release'"),
    ],
)
def test_the_values_schema_refuses_bad_alert_values(tmp_path: Path, values: Json, complaint: str) -> None:
    accepted = helm_template(tmp_path, {"prometheusRule": {"enabled": True}}, CHART)
    assert accepted.returncode == 0, accepted.stderr  # the defaults pass
    refused = helm_template(tmp_path, values, CHART)
    assert refused.returncode != 0
    assert "don't meet the specifications of the schema" in refused.stderr, refused.stderr
    assert complaint in refused.stderr, refused.stderr


def test_every_value_key_of_the_alerts_is_in_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())["properties"]
    for key in ("prometheusRule", "alerts"):
        assert set(DEFAULTS[key]) == set(schema[key]["properties"]), key
    for name, block in DEFAULTS["alerts"].items():
        assert set(block) == set(schema["alerts"]["properties"][name]["properties"]), name
        assert re.fullmatch(r"\d+[smh]", block["for"]), name

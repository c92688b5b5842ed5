"""The chart's PrometheusRule as the tests see it: rendered by the real `helm template`, its groups
written out as a Prometheus rules file, promtool run on it, and the names the rules and runbooks use.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from mailtrain_operator.metrics import OperatorMetrics
from mailtrain_sender.metrics import Metrics
from tests.harness import binaries

CHART = binaries.REPO_ROOT / "helm" / "mailtrain-operator"
SCHEMA = CHART / "values.schema.json"
RUNBOOKS = binaries.REPO_ROOT / "docs" / "runbooks.md"
UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")
# rules_test.yaml expects the release here (MailtrainOperatorDown's selector is the release's namespace).
NAMESPACE = "mail-system"
METRIC_NAME = re.compile(r"\bmailtrain_(?:operator|sender)_[a-z0-9_]+")

Json = dict[str, Any]


def helm_template(directory: Path, values: Json, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    values_file = directory / "values.json"
    values_file.write_text(json.dumps(values))
    helm = binaries.controlplane_binary("helm")
    command = [str(helm), "template", "mt", str(chart), "-n", NAMESPACE, "-f", str(values_file)]
    env = {"HOME": str(directory), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def prometheus_rules(directory: Path, values: Json) -> list[Json]:
    """Every PrometheusRule the chart renders with these values."""
    result = helm_template(directory, values)
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return [doc for doc in documents if doc["kind"] == "PrometheusRule"]


def the_rule(directory: Path, values: Json) -> Json:
    found = prometheus_rules(directory, {"prometheusRule": {"enabled": True}, **values})
    assert len(found) == 1, found
    assert found[0]["apiVersion"] == "monitoring.coreos.com/v1"
    return found[0]


def alerts_of(rule: Json) -> dict[str, Json]:
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}


def write_rules_file(rule: Json, directory: Path) -> Path:
    """The PrometheusRule's spec.groups as a Prometheus rules file, with the unit tests beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(binaries.prometheus_binary("promtool")), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def unit_test_cases() -> list[Json]:
    """Every alert_rule_test case of rules_test.yaml."""
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


def exported_names() -> set[str]:
    """Every series name the operator and a sender export, as Prometheus stores them."""
    names: set[str] = set()
    registries = [OperatorMetrics(CollectorRegistry()).registry, Metrics("p", CollectorRegistry()).registry]
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def runbook_sections() -> dict[str, str]:
    """The sections of docs/runbooks.md by their anchor (GitHub's: the heading in lower case, with
    spaces as hyphens and other punctuation dropped)."""
    sections: dict[str, str] = {}
    anchor = None
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip().lower()
            anchor = re.sub(r"[^a-z0-9 _-]", "", heading).replace(" ", "-")
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections

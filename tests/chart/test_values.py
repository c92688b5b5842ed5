"""values.yaml, values.schema.json and what they set: every value is in the schema, a wrong value fails
`helm template` (and so `helm install`) with a message naming it, the operator's settings reach it
with the operator's own bounds, the images are those the node agent's table runs, and `helm lint`
passes for each set of values the tests render.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailtrain_operator.settings import ENV_PREFIX, OperatorSettings
from tests.chart import chart
from tests.harness.node_agent.images import ImageTable, default_images

SCHEMA_PATH = chart.CHART / "values.schema.json"
# Values that are free-form maps or lists of Kubernetes objects: the schema says what they are, not
# each key (the apiserver checks what is inside).
FREE_FORM = {"resources", "affinity", "nodeSelector", "podLabels", "podAnnotations", "annotations", "labels"}


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    return loaded


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema()["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _leaves(values: dict[str, Any], prefix: str = "", probes_too: bool = False) -> list[tuple[str, Any]]:
    """(dotted path, default) of every value; with probes_too, a probe's timings are one value."""
    found = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        whole_probe = probes_too and prefix == "probes"
        if isinstance(value, dict) and value and key not in FREE_FORM and not whole_probe:
            found += _leaves(value, path, probes_too)
        else:
            found.append((path, value))
    return found


def _schema_of(path: str) -> dict[str, Any]:
    node = schema()
    for key in path.split("."):
        node = _resolve(node)
        assert node.get("additionalProperties") is False, f"{path}: the object holding {key} takes any key"
        assert key in node["properties"], f"{path} is not in values.schema.json"
        node = node["properties"][key]
    return _resolve(node)


def test_every_value_is_in_the_schema_and_every_object_refuses_unknown_keys() -> None:
    leaves = _leaves(defaults())
    assert len(leaves) > 60
    for path, _ in leaves:
        _schema_of(path)
    # And the other way: nothing in the schema that values.yaml does not document.
    documented = {path.split(".")[0] for path, _ in leaves}
    assert set(schema()["properties"]) == documented


ALERT_KEYS = {"enabled", "severity", "for", "window"}


def test_every_value_in_values_yaml_has_a_comment() -> None:
    """Each value (a key with a value on its line) has a `##` comment right above it, but the keys
    inside a free-form map (a ResourceRequirements' cpu and memory, for one), a probe's timings, and
    the keys that every alert has."""
    uncommented: list[str] = []
    parents: list[tuple[int, str]] = []  # (indentation, key) of the blocks the line is in
    lines = (chart.CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        key, colon, value = line.strip().partition(":")
        if not colon or line.lstrip().startswith(("#", "-")):
            continue
        indent = len(line) - len(line.lstrip())
        parents = [(i, k) for i, k in parents if i < indent]
        if not value.strip():
            parents.append((indent, key))
            continue
        free_form = any(k in FREE_FORM or k == "probes" for _, k in parents)  # probes: Kubernetes' fields
        # The keys every alert has are explained once, above `alerts`.
        common = key in ALERT_KEYS and any(k == "alerts" for _, k in parents)
        if not free_form and not common and not lines[number - 1].strip().startswith("##"):
            uncommented.append(f"line {number + 1}: {line.strip()}")
    assert uncommented == []


def test_docs_chart_md_lists_every_value_with_its_default() -> None:
    text = (chart.CHART.parents[1] / "docs" / "chart.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")
    }
    for path, value in _leaves(defaults(), probes_too=True):
        assert path in rows, f"{path} is not in docs/chart.md's values table"
        assert f"`{json.dumps(value, separators=(', ', ': '))}`" in rows[path], path


WRONG_VALUES = [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"watchNamespaces": ["Mail"]}, "/watchNamespaces/0"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
    ({"settings": {"chunkSize": 100}}, "/settings/chunkSize"),
    ({"settings": {"logLevel": "verbose"}}, "/settings/logLevel"),
    ({"settings": {"progressInterval": 0}}, "/settings/progressInterval"),
    ({"peering": {"lifetime": 5}}, "/peering/lifetime"),
    ({"peering": {"name": "Mail_Peers"}}, "/peering/name"),
    ({"ports": {"health": 70000}}, "/ports/health"),
    ({"podAntiAffinity": "always"}, "/podAntiAffinity"),
    ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "/podDisruptionBudget/maxUnavailable"),
    ({"serviceAccountTokenExpirationSeconds": 60}, "/serviceAccountTokenExpirationSeconds"),
    ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "/metrics/serviceMonitor/interval"),
    ({"metrics": {"podMonitor": {"enable": True}}}, "'enable'"),
    ({"redis": {"appendfsync": "sometimes"}}, "/redis/appendfsync"),
    ({"redis": {"maxmemory": "lots"}}, "/redis/maxmemory"),
    ({"redis": {"persistence": {"size": "big"}}}, "/redis/persistence/size"),
    ({"redis": {"runAsUser": 0}}, "/redis/runAsUser"),
    ({"pools": [{"name": "Bulk", "spec": {}}]}, "/pools/0/name"),
    ({"pools": [{"name": "bulk"}]}, "'spec'"),
    ({"replicas": 2}, "'replicas'"),
]


@pytest.mark.parametrize(("values", "named"), WRONG_VALUES, ids=[named for _, named in WRONG_VALUES])
def test_a_wrong_value_fails_with_a_message_naming_it(
    values: dict[str, Any], named: str, tmp_path: Path
) -> None:
    message = chart.refusal(values, tmp_path)
    assert "values don't meet the specifications of the schema" in message
    assert named in message, message


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"ports": {"health": 9090}}, "ports.health and ports.metrics are both 9090"),
        (
            {"pools": [{"name": "bulk", "spec": {"smtp": {"host": "h"}}}]},
            "pools[0] (bulk): spec.redis names no Redis",
        ),
        (
            {
                "watchNamespaces": ["team-a"],
                "pools": [
                    {"name": "bulk", "namespace": "team-b", "spec": {"redis": {"url": "redis://r:6379"}}}
                ],
            },
            "pools[0] (bulk): namespace team-b is not in watchNamespaces",
        ),
    ],
)
def test_values_the_schema_cannot_judge_fail_the_render_with_the_reason(
    values: dict[str, Any], named: str, tmp_path: Path
) -> None:
    assert named in chart.refusal(values, tmp_path)


def _deployment_env(values: dict[str, Any], directory: Path) -> dict[str, Any]:
    deployment = chart.one(chart.render(values, directory), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_operator_setting_is_set_by_the_chart_and_the_operator_accepts_the_defaults(
    tmp_path: Path,
) -> None:
    env = _deployment_env({"watchNamespaces": ["mail", "news"]}, tmp_path)
    fields = {ENV_PREFIX + name.upper() for name in OperatorSettings.model_fields}
    # STANDALONE is for development and tests: the chart always peers.
    assert fields - set(env) == {ENV_PREFIX + "STANDALONE"}
    given = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    given = {k: v.replace("$(POD_IP)", "10.244.0.5") for k, v in given.items()}
    settings = OperatorSettings(**given)
    assert settings.namespaces == ("mail", "news")
    assert settings.sender_image == "ghcr.io/mailtrain-operator/sender:0.1.0"


# values.schema.json's settings bounds and the operator's (pydantic) ones.
SETTINGS_FIELDS = {
    "progressInterval": "progress_interval",
    "chunkSize": "chunk_size",
    "recipientsUrlTimeout": "recipients_url_timeout",
    "recipientsMaxBytes": "recipients_max_bytes",
    "recipientsMaxCount": "recipients_max_count",
}


def _bounds(field: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for meta in OperatorSettings.model_fields[field].metadata:
        for name in ("ge", "gt", "le", "multiple_of"):
            if getattr(meta, name, None) is not None:
                found[name] = getattr(meta, name)
    return found


def test_the_schema_bounds_of_the_settings_are_the_operators() -> None:
    properties = _schema_of("settings")["properties"]
    as_schema = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "multiple_of": "multipleOf"}
    for value, field in SETTINGS_FIELDS.items():
        expected = {as_schema[k]: v for k, v in _bounds(field).items()}
        assert {k: properties[value][k] for k in expected} == expected, value
        assert not set(properties[value]) & (set(as_schema.values()) - set(expected)), value
    lifetime = _schema_of("peering.lifetime")
    assert (lifetime["minimum"], lifetime["maximum"]) == (
        _bounds("peering_lifetime")["ge"],
        _bounds("peering_lifetime")["le"],
    )
    assert _schema_of("settings.logLevel")["enum"] == ["debug", "info", "warning", "error"]
    default_settings = OperatorSettings()
    for value, field in SETTINGS_FIELDS.items():
        assert defaults()["settings"][value] == getattr(default_settings, field), value


def test_the_images_are_those_the_node_agent_runs(tmp_path: Path) -> None:
    """The operator, sender, private Redis and bundled Redis images of the default values are in the
    node agent's image table, so the chart's pods run on the local test cluster as they are."""
    table = ImageTable(default_images())
    documents = chart.render({"redis": {"enabled": True}}, tmp_path)
    images = [
        container["image"]
        for doc in documents
        if doc["kind"] in ("Deployment", "StatefulSet")
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]
    env = _deployment_env({}, tmp_path)
    images += [env["MAILTRAIN_OPERATOR_SENDER_IMAGE"], env["MAILTRAIN_OPERATOR_PRIVATE_REDIS_IMAGE"]]
    assert len(images) == 4
    for image in images:
        assert table.resolve(image) is not None, f"{image} is not in the node agent's table: {table.known()}"
    # The operator's own defaults name the same images the chart does.
    settings = OperatorSettings()
    assert env["MAILTRAIN_OPERATOR_SENDER_IMAGE"] == settings.sender_image
    assert env["MAILTRAIN_OPERATOR_PRIVATE_REDIS_IMAGE"] == settings.private_redis_image


LINTED = {
    "default": {},
    "namespaced": {"watchNamespaces": ["mail", "news"], "replicaCount": 3, "podAntiAffinity": "hard"},
    "everything": {
        "redis": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        "pools": [{"name": "bulk", "spec": {"smtp": {"host": "smtp.example.com"}}}],
    },
    "least": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "x"}, "replicaCount": 1},
}


@pytest.mark.parametrize("name", LINTED)
def test_helm_lint_passes_strictly(name: str, tmp_path: Path) -> None:
    values = chart.values_file(LINTED[name], tmp_path)
    result = chart.helm("lint", "--strict", str(chart.CHART), "-f", str(values), directory=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout

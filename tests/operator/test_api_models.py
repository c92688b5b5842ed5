"""The CRDs and the pydantic models of api.py agree, field by field.

Walks each CRD's schema and the model beside it: the same property names (camelCase aliases),
the same required set, matching types (string/datetime/enum, integer, number, boolean, object,
map, list), equal defaults (the apiserver's nested defaulting applied), equal bounds and patterns,
and equal descriptions. CEL rules, list types and integer formats exist only in the CRDs.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any, Literal

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mailtrain_operator import api
from tests.operator.conftest import schema

Schema = dict[str, Any]
_BOUNDS = (
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
)


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_bounds(metadata: list[Any], container: str) -> dict[str, Any]:
    """The field's constraints, named as the CRD names them for a value of this kind."""
    found: dict[str, Any] = {}
    min_name, max_name = {
        "string": ("minLength", "maxLength"),
        "array": ("minItems", "maxItems"),
        "object": ("minProperties", "maxProperties"),
    }[container]
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            found["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            found["maximum"] = item.le
        elif isinstance(item, annotated_types.MinLen):
            found[min_name] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            found[max_name] = item.max_length
        elif getattr(item, "pattern", None) is not None:
            found["pattern"] = item.pattern
    return found


def _with_defaults(node: Schema, value: Any) -> Any:
    """What the apiserver stores for `value`: defaults of absent properties filled in, recursively."""
    if not isinstance(value, dict) or "properties" not in node:
        return value
    filled = dict(value)
    for name, prop in node["properties"].items():
        if name not in filled and "default" in prop:
            filled[name] = prop["default"]
        if name in filled:
            filled[name] = _with_defaults(prop, filled[name])
    return filled


def _model_default(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    return (
        value.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(value, BaseModel)
        else value
    )


def _compare_type(node: Schema, annotation: Any, bounds: list[Any], path: str, problems: list[str]) -> None:
    annotation = _unwrap_optional(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    kind = node.get("type")
    if typing.get_origin(annotation) is typing.Annotated:
        extra = [
            m
            for item in annotation.__metadata__
            for m in (item.metadata if isinstance(item, FieldInfo) else [item])
        ]
        _compare_type(node, args[0], [*bounds, *extra], path, problems)
        return
    expected = {"string": str, "integer": int, "number": float, "boolean": bool}
    if kind == "string" and node.get("format") == "date-time":
        ok = annotation is datetime
    elif kind == "string" and "enum" in node:
        ok = origin is Literal and set(args) == set(node["enum"])
    elif kind in expected:
        ok = annotation is expected[kind]
    elif kind == "array":
        ok = origin is list
        if ok:
            _compare_type(node["items"], args[0], [], f"{path}[]", problems)
    elif kind == "object" and "properties" in node:
        ok = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if ok:
            _compare_object(node, annotation, path, problems)
    elif kind == "object":
        ok = origin is dict and args[0] is str
        if ok and isinstance(node.get("additionalProperties"), dict):
            _compare_type(node["additionalProperties"], args[1], [], f"{path}{{}}", problems)
        elif ok:
            ok = node.get("x-kubernetes-preserve-unknown-fields") is True and args[1] is Any
    else:
        ok = False
    if not ok:
        problems.append(
            f"{path}: the CRD says {kind} {node.get('format') or node.get('enum') or ''}, "
            f"the model {annotation}"
        )
        return
    crd_bounds = {key: node[key] for key in _BOUNDS if key in node}
    model_bounds = _model_bounds(bounds, kind if kind in ("string", "array", "object") else "string")
    if crd_bounds != model_bounds:
        problems.append(f"{path}: bounds differ: CRD {crd_bounds}, model {model_bounds}")


def _compare_object(node: Schema, model: type[BaseModel], path: str, problems: list[str]) -> None:
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    properties: Schema = node.get("properties", {})
    for name in sorted(set(properties) ^ set(fields)):
        where = "the CRD" if name in properties else f"the model {model.__name__}"
        problems.append(f"{path}.{name}: only in {where}")
    required = {name for name, field in fields.items() if field.is_required()}
    if set(node.get("required", [])) != required:
        problems.append(
            f"{path}: required {sorted(node.get('required', []))} in the CRD, {sorted(required)} in the model"
        )
    for name in sorted(set(properties) & set(fields)):
        prop, field = properties[name], fields[name]
        where = f"{path}.{name}"
        if prop.get("description") != field.description:
            problems.append(
                f"{where}: descriptions differ:\n"
                f"  CRD:   {prop.get('description')}\n  model: {field.description}"
            )
        if not field.is_required():
            crd_default = _with_defaults(prop, prop["default"]) if "default" in prop else None
            if crd_default != _model_default(field):
                problems.append(
                    f"{where}: default {crd_default!r} in the CRD, {_model_default(field)!r} in the model"
                )
        _compare_type(prop, field.annotation, field.metadata, where, problems)


KINDS: dict[str, tuple[type[BaseModel], type[BaseModel], type[BaseModel]]] = {
    "SenderPool": (api.SenderPool, api.SenderPoolSpec, api.SenderPoolStatus),
    "MailCampaign": (api.MailCampaign, api.MailCampaignSpec, api.MailCampaignStatus),
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_crd_schema_and_the_model_agree_field_by_field(kind: str) -> None:
    whole, spec, status = KINDS[kind]
    root = schema(kind)
    problems: list[str] = []
    _compare_object(root["properties"]["spec"], spec, f"{kind}.spec", problems)
    _compare_object(root["properties"]["status"], status, f"{kind}.status", problems)
    assert not problems, "\n".join(problems)
    assert root["required"] == ["spec"] and whole.model_fields["spec"].is_required()
    assert root["properties"]["status"]["description"] == whole.model_fields["status"].description


def test_the_pool_name_limit_is_the_crds() -> None:
    assert (
        schema("SenderPool")["properties"]["metadata"]["properties"]["name"]["maxLength"]
        == api.POOL_NAME_MAX_LENGTH
    )


def test_the_walk_notices_a_difference() -> None:
    """The comparison itself is tested: a model that differs in each way is reported each time."""

    class Wrong(BaseModel):
        processes: str = "1"  # the CRD says integer, default 1, bounds 0..200

    node = schema("SenderPool")["properties"]["spec"]["properties"]["queue"]
    problems: list[str] = []
    _compare_object(node, Wrong, "queue", problems)
    text = "\n".join(problems)
    assert "queue.maxParallelCampaigns: only in the CRD" in text
    assert "queue.processes: the CRD says integer" in text
    assert "queue.processes: default 1 in the CRD, '1' in the model" in text
    assert "queue.processes: descriptions differ" in text


def test_ranges_of_the_checkpoint_read_back_as_written() -> None:
    ranges = [(0, 41), (43, 43), (45, 50)]
    assert api.format_ranges(ranges) == "0-41,43,45-50"
    assert api.parse_ranges("0-41,43,45-50") == ranges
    assert api.Checkpoint(completed_chunks="").completed_ranges == []
    assert api.Checkpoint.model_validate({"completedChunks": "7"}).completed_ranges == [(7, 7)]

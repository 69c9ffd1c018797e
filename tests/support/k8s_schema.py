"""Kubernetes manifests checked against the upstream schemas, as strictly as ``kubectl --validate=strict``.

The schemas are the published field definitions, as generated into pydantic models by cloudcoil from the
Kubernetes OpenAPI document (``cloudcoil-models-kubernetes``) and from prometheus-operator's CRDs
(``cloudcoil-models-prometheus-operator``). pydantic checks types, enums and patterns; those models
ignore unknown fields (the API server would prune them silently), so ``unknown_fields`` walks the
document against the models and reports every key the schema does not define.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from cloudcoil.models.kubernetes.core.v1 import ConfigMap
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, PrometheusRule, ServiceMonitor
from pydantic import BaseModel, RootModel

#: apiVersion/kind → the model of that resource's schema.
SCHEMAS: dict[tuple[str, str], type[BaseModel]] = {
    ("v1", "ConfigMap"): ConfigMap,
    ("monitoring.coreos.com/v1", "PodMonitor"): PodMonitor,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PrometheusRule,
}


def _models_in(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, with Optional/Union/Annotated unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return [annotation]


def unknown_fields(annotation: Any, data: Any, path: str = "") -> list[str]:
    """Paths in ``data`` that the schema ``annotation`` does not define."""
    for candidate in _models_in(annotation):
        origin = typing.get_origin(candidate)
        if isinstance(candidate, type) and issubclass(candidate, RootModel):
            return unknown_fields(candidate.model_fields["root"].annotation, data, path)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) and isinstance(data, Mapping):
            by_key = {(f.alias or name): f for name, f in candidate.model_fields.items()}
            found: list[str] = []
            for key, value in data.items():
                field = by_key.get(key)
                if field is None:
                    found.append(f"{path}.{key}")
                else:
                    found.extend(unknown_fields(field.annotation, value, f"{path}.{key}"))
            return found
        if origin in (list, tuple) and isinstance(data, list):
            (item,) = typing.get_args(candidate)[:1]
            return [
                bad for i, value in enumerate(data) for bad in unknown_fields(item, value, f"{path}[{i}]")
            ]
        if origin is dict and isinstance(data, Mapping):
            value_type = typing.get_args(candidate)[1]
            return [bad for k, v in data.items() for bad in unknown_fields(value_type, v, f"{path}.{k}")]
    return []


def validate_manifest(document: Mapping[str, Any]) -> list[str]:
    """Every schema violation of one manifest (empty when it is valid), as ``path: problem`` lines."""
    model = SCHEMAS.get((document.get("apiVersion", ""), document.get("kind", "")))
    if model is None:
        return [f"no schema for apiVersion={document.get('apiVersion')!r} kind={document.get('kind')!r}"]
    problems = [f"{bad}: unknown field" for bad in unknown_fields(model, document)]
    try:
        model.model_validate(document)
    except ValueError as exc:  # pydantic's ValidationError
        problems.append(str(exc))
    return problems

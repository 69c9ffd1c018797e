"""The references stay complete: every config key and every metric is documented."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from subagent_telemetry import Config
from subagent_telemetry import _catalog as cat
from subagent_telemetry._vocab import ErrorType, Resource, Status

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if nested and not path.startswith("alerts."):
            keys.extend(_keys(annotation, path + "."))  # type: ignore[arg-type]
        else:
            keys.append(path)
    return keys


def test_config_reference_lists_every_key() -> None:
    """docs/config.md names every configuration key."""
    text = (DOCS / "config.md").read_text()
    missing = [key for key in _keys(Config) if f"`{key}`" not in text]
    assert missing == []


def test_metrics_reference_lists_every_metric_with_its_labels() -> None:
    """docs/metrics.md has a row for each catalog metric naming its labels."""
    text = (DOCS / "metrics.md").read_text()
    for spec in cat.CATALOG:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{spec.name}`")), None)
        assert row is not None, spec.name
        for label in spec.labels:
            assert f"`{label}`" in row, (spec.name, label)


def test_metrics_reference_lists_every_vocabulary_value() -> None:
    """Every status, error_type and resource value is documented."""
    text = (DOCS / "metrics.md").read_text()
    for value in [*Status, *ErrorType, *Resource]:
        assert f"`{value.value}`" in text, value


def test_metrics_reference_lists_the_buckets() -> None:
    """The documented buckets are the catalog's."""
    text = (DOCS / "metrics.md").read_text()
    for spec in (cat.DURATION, cat.TURNS, cat.TOKENS):
        assert ", ".join(f"{b:g}" for b in spec.buckets) in text, spec.name

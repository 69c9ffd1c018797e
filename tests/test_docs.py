"""The references stay complete: every config key and every metric is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from subagent_telemetry import Config, QuotaExceeded
from subagent_telemetry import _catalog as cat
from subagent_telemetry import _errors as errors
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
    for spec in (cat.DURATION, cat.TURNS, cat.TOKENS, cat.COST):
        assert ", ".join(f"{b:g}" for b in spec.buckets) in text, spec.name


def _quota_exceptions() -> list[type[QuotaExceeded]]:
    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, QuotaExceeded) and cls is not QuotaExceeded
    ]


def test_tuning_guide_has_a_troubleshooting_section_per_quota_message() -> None:
    """docs/tuning.md has a section titled with each quota exception's message heading."""
    text = (DOCS / "tuning.md").read_text()
    headings = {line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("### ")}
    missing = [cls.heading for cls in _quota_exceptions() if cls.heading not in headings]
    assert missing == []


def test_each_quota_exception_links_its_troubleshooting_section() -> None:
    """Every quota exception's docs name the anchor of its section in docs/tuning.md."""
    for cls in _quota_exceptions():
        anchor = cls.heading.lower().replace(" ", "-")
        assert f"docs/tuning.md#{anchor}" in (cls.__doc__ or ""), cls.__name__


def test_runbooks_link_every_troubleshooting_section() -> None:
    """docs/runbooks.md links each troubleshooting section of docs/tuning.md."""
    text = (DOCS / "runbooks.md").read_text()
    for cls in _quota_exceptions():
        assert f"(tuning.md#{cls.heading.lower().replace(' ', '-')})" in text, cls.heading


def test_operations_doc_shows_screenshots_that_exist() -> None:
    """Every image docs/operations.md shows is in docs/images (made by the tests' own tooling)."""
    text = (DOCS / "operations.md").read_text()
    images = re.findall(r"\]\((images/[^)]+\.png)\)", text)
    assert len(images) >= 4
    missing = [image for image in images if not (DOCS / image).is_file()]
    assert missing == []

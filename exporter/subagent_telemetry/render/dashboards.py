"""Grafana dashboards rendered from the config with grafana-foundation-sdk.

The SDK is the optional ``dashboards`` extra, imported only when dashboards are rendered, so the
rest of the package (and rule rendering) works without it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .._config import Config
from .._errors import missing_extra

#: Where each dashboard is written, relative to the output directory, by its UID suffix.
DASHBOARD_PATHS: dict[str, Path] = {
    "overview": Path("dashboards/subagents-overview.json"),
    "quotas": Path("dashboards/subagents-quotas.json"),
}


def render_dashboards(config: Config) -> dict[Path, str]:
    """Rendered dashboard JSON files keyed by path relative to the output directory."""
    try:
        from . import _dashboard_layout as layout  # noqa: PLC0415 - the SDK is an optional extra
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "dashboards", "rendering dashboards") from None
    return {
        DASHBOARD_PATHS["overview"]: layout.to_json(layout.overview(config)),
        DASHBOARD_PATHS["quotas"]: layout.to_json(layout.quotas(config)),
    }


GRAFANA_API_DIR = Path("grafana-api")


def grafana_api_payloads(config: Config, dashboards: dict[Path, str]) -> dict[Path, str]:
    """Request bodies for Grafana's ``POST /api/dashboards/db``, one per rendered dashboard.

    ``id`` null and ``overwrite`` true make the request create the dashboard or replace the one with the
    same UID, so re-importing after a re-render is idempotent; ``folderUid`` is ``dashboards.folder_uid``.
    """
    payloads = {}
    for path, text in sorted(dashboards.items()):
        board = json.loads(text)
        board["id"] = None
        body: dict[str, object] = {
            "dashboard": board,
            "overwrite": True,
            "message": "rendered by subagent-telemetry",
        }
        if config.dashboards.folder_uid is not None:
            body["folderUid"] = config.dashboards.folder_uid
        payloads[GRAFANA_API_DIR / path.name] = json.dumps(body, indent=2, sort_keys=False) + "\n"
    return payloads

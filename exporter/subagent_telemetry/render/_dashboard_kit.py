"""Panel, target and variable factories on top of grafana-foundation-sdk.

Every factory takes the title, description and unit as required arguments and binds the panel and
its targets to the ``${datasource}`` variable, so the dashboard-linter conventions hold by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dashboard_b
from grafana_foundation_sdk.builders import gauge as gauge_b
from grafana_foundation_sdk.builders import heatmap as heatmap_b
from grafana_foundation_sdk.builders import prometheus as prometheus_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as timeseries_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common, dashboard, heatmap, prometheus

#: Every panel and target queries the data source the ``datasource`` variable selects.
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")

#: Grafana's colours for "fine", "warning" and "bad" threshold steps.
GREEN, ORANGE, RED = "green", "orange", "red"

#: The unit the alert-list panel gets: it shows alert states, not numbers.
NO_UNIT = "none"


@dataclass(frozen=True, slots=True)
class Target:
    """One PromQL query of a panel; ``legend`` is a Grafana legend format (``{{label}}``)."""

    expr: str
    legend: str = ""


def legend(*labels: str, suffix: str = "") -> str:
    """``{{a}} {{b}} suffix`` for the given labels."""
    parts = [f"{{{{{name}}}}}" for name in dict.fromkeys(labels)]
    return " ".join([*parts, suffix] if suffix else parts) or "__auto"


def thresholds(*steps: tuple[float, str], base: str = GREEN) -> dashboard_b.ThresholdsConfig:
    """Absolute thresholds: ``base`` below the first step, then each ``(value, colour)``."""
    models = [dashboard.Threshold(value=None, color=base)]
    models += [dashboard.Threshold(value=value, color=color) for value, color in steps]
    return dashboard_b.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(models)


def _queries(
    targets: Sequence[Target], *, instant: bool = False, fmt: prometheus.PromQueryFormat | None = None
) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    built: list[cogbuilder.Builder[cogvariants.Dataquery]] = []
    for index, target in enumerate(targets):
        query = (
            prometheus_b.Dataquery()
            .ref_id(chr(ord("A") + index))
            .expr(target.expr)
            .legend_format(target.legend)
            .editor_mode(prometheus.QueryEditorMode.CODE)
            .datasource(DATASOURCE)
        )
        query = query.instant() if instant else query.range()
        if fmt is not None:
            query = query.format(fmt)
        built.append(query)
    return built


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Target],
    *,
    threshold_steps: Sequence[tuple[float, str]] = (),
    stacked: bool = False,
    min_value: float | None = 0,
    overrides: Sequence[tuple[str, list[dashboard.DynamicConfigValue]]] = (),
    width: int = 12,
    height: int = 8,
) -> timeseries_b.Panel:
    """A time series; threshold steps are drawn as dashed lines so the alert boundary is visible."""
    panel = (
        timeseries_b.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_queries(targets))
        .span(width)
        .height(height)
        .fill_opacity(10)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if min_value is not None:
        panel = panel.min(min_value)
    if threshold_steps:
        panel = panel.thresholds(thresholds(*threshold_steps)).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    for regexp, properties in overrides:
        panel = panel.override_by_regexp(regexp, properties)
    return panel


def stat(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Target],
    *,
    threshold_steps: Sequence[tuple[float, str]] = (),
    width: int = 6,
    height: int = 4,
) -> stat_b.Panel:
    """A single-value stat of the last value, coloured by the threshold steps."""
    return (
        stat_b.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_queries(targets, instant=True))
        .span(width)
        .height(height)
        .thresholds(thresholds(*threshold_steps))
        .color_mode(common.BigValueColorMode.BACKGROUND if threshold_steps else common.BigValueColorMode.NONE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def gauge(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Target],
    *,
    threshold_steps: Sequence[tuple[float, str]],
    max_value: float,
    width: int = 12,
    height: int = 8,
) -> gauge_b.Panel:
    """A gauge per series from 0 to ``max_value`` with threshold markers."""
    return (
        gauge_b.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_queries(targets, instant=True))
        .span(width)
        .height(height)
        .min(0)
        .max(max_value)
        .thresholds(thresholds(*threshold_steps))
        .show_threshold_markers(True)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def heatmap_panel(
    title: str, description: str, unit: str, target: Target, *, width: int = 12, height: int = 8
) -> heatmap_b.Panel:
    """A heatmap of a Prometheus histogram's buckets (``format: heatmap``; Grafana de-accumulates)."""
    return (
        heatmap_b.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_queries([target], fmt=prometheus.PromQueryFormat.HEATMAP))
        .span(width)
        .height(height)
        .calculate(False)
        .y_axis(heatmap_b.YAxisConfig().unit(unit))
        .color(
            heatmap_b.HeatmapColorOptions()
            .mode(heatmap.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(heatmap.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .cell_values(heatmap_b.CellValues().unit("ops"))
        .show_legend()
    )


def table(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Target],
    *,
    column_units: dict[str, str],
    renames: dict[str, str],
    column_thresholds: dict[str, Sequence[tuple[float, str]]],
    width: int = 24,
    height: int = 8,
) -> table_b.Panel:
    """Instant queries merged into one row per label set; ``Value #<refId>`` columns renamed."""
    panel = (
        table_b.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_queries(targets, instant=True, fmt=prometheus.PromQueryFormat.TABLE))
        .span(width)
        .height(height)
        .with_transformation(dashboard.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dashboard.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True}, "renameByName": renames},
            )
        )
    )
    for column, column_unit in column_units.items():
        properties = [dashboard.DynamicConfigValue(id_val="unit", value=column_unit)]
        if column in column_thresholds:
            properties += [
                dashboard.DynamicConfigValue(
                    id_val="thresholds", value=thresholds(*column_thresholds[column]).build()
                ),
                dashboard.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ]
        panel = panel.override_by_name(column, properties)
    return panel


def alert_list(title: str, description: str, alert_name_filter: str, *, width: int = 24) -> dashboard_b.Panel:
    """Grafana's alert list of firing and pending alerts whose name contains ``alert_name_filter``.

    It reads Grafana's alerting state (including data-source-managed Prometheus rules), so it has no
    PromQL target.
    """
    return (
        dashboard_b.Panel()
        .type("alertlist")
        .title(title)
        .description(description)
        .unit(NO_UNIT)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .options(
            {
                "viewMode": "list",
                "groupMode": "default",
                "groupBy": [],
                "maxItems": 20,
                "sortOrder": 1,
                "dashboardAlerts": False,
                "alertName": alert_name_filter,
                "alertInstanceLabelFilter": "",
                "stateFilter": {
                    "firing": True,
                    "pending": True,
                    "noData": False,
                    "normal": False,
                    "error": True,
                },
            }
        )
    )


def series_style(color: str, *, dashed: bool = False) -> list[dashboard.DynamicConfigValue]:
    """Override properties: a fixed colour and optionally a dashed line (for limits)."""
    properties = [
        dashboard.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color}),
    ]
    if dashed:
        properties += [
            dashboard.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
            dashboard.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        ]
    return properties


def unit_override(unit: str) -> list[dashboard.DynamicConfigValue]:
    """Override properties that change only the unit."""
    return [dashboard.DynamicConfigValue(id_val="unit", value=unit)]


def datasource_variable(default_uid: str) -> dashboard_b.DatasourceVariable:
    """The ``datasource`` variable ("Data source"), Prometheus type, defaulting to ``default_uid``."""
    return (
        dashboard_b.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(dashboard.VariableOption(selected=True, text=default_uid, value=default_uid))
    )


def label_variable(name: str, label: str, query: str) -> dashboard_b.QueryVariable:
    """A multi-value label variable with All (``.+``) fed by ``label_values`` from ``$datasource``."""
    return (
        dashboard_b.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(dashboard.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
    )


def row(title: str) -> dashboard_b.Row:
    """An expanded row; the panels that follow it belong to it."""
    return dashboard_b.Row(title)

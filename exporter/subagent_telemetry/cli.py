"""The ``subagent-telemetry`` command: the one place that wires everything for a human."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._config import DEFAULT_PRESET, PRESETS, Config, load_config, with_overrides
from ._errors import ConfigError, missing_extra

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _load(args: argparse.Namespace) -> Config:
    if getattr(args, "config", None):
        return load_config(args.config)
    return Config.preset(getattr(args, "preset", None) or DEFAULT_PRESET)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", "-c", type=Path, help="YAML configuration file (default: the preset)")
    group.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help=f"named preset (default: {DEFAULT_PRESET})"
    )


def _limit(value: float | Decimal | None) -> str:
    return "unlimited" if value is None else f"{value:g}"


def _extras(config: Config) -> list[tuple[str, str, str]]:
    """(setting, pip extra, module) for each optional extra the configuration needs."""
    needed = []
    if config.telemetry.otlp.enabled:
        needed.append(("telemetry.otlp.enabled is true", "otel", "opentelemetry.sdk"))
    if config.quota.shared:
        needed.append(("quota.store is a Redis URL", "redis", "redis"))
    return needed


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # A parent package is missing.
        return False


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.config_file is not None and args.config is not None:
        raise ConfigError("give the configuration file once: `validate FILE` or `validate --config FILE`")
    path = args.config_file if args.config_file is not None else args.config
    if path is None:
        raise ConfigError("no configuration file: `subagent-telemetry validate --config agent.yaml`")
    config = load_config(path)
    sub = config.subagent
    preset = f"preset={sub.preset}, " if sub.preset else ""
    print(
        f"{path}: valid ({preset}max_depth={sub.max_depth}, "
        f"default_max_turns={sub.default_max_turns}, max_executions={_limit(sub.max_executions)}, "
        f"max_total_tokens={_limit(sub.max_total_tokens)}, max_total_time={_limit(sub.max_total_time)}, "
        f"max_total_cost={_limit(sub.max_total_cost)}, max_concurrency={sub.max_concurrency})"
    )
    if not sub.budgets_set:
        print(
            f"warning: {path} sets no execution, token, time or cost budget, so sessions are "
            "unlimited; set agent.subagent.max_executions, max_total_tokens, max_total_time or "
            "max_total_cost, or start from a preset with agent.subagent.preset: balanced",
            file=sys.stderr,
        )
    for needed_by, extra, module in _extras(config):
        if not _installed(module):
            print(
                f"warning: {needed_by}, which needs pip install 'subagent-telemetry[{extra}]' "
                "(not installed here)",
                file=sys.stderr,
            )
    if args.store:
        try:
            from .quota._redis_store import check_store  # noqa: PLC0415 - needs the redis extra
        except ModuleNotFoundError as exc:
            raise missing_extra(exc, "redis", "validate --store") from None
        print(check_store(config))
    return EXIT_OK


def _cmd_render(args: argparse.Namespace) -> int:
    from .render import (  # noqa: PLC0415 - render-only deps
        DEFAULT_FORMATS,
        drifted_files,
        render_files,
        write_files,
    )

    config = _load(args)
    if args.namespace is not None or args.label:
        overrides = _render_overrides(config, args.namespace, dict(args.label or ()))
        config = with_overrides(config, overrides, source="render --namespace/--label")
    formats = tuple(dict.fromkeys(args.format)) if args.format else DEFAULT_FORMATS
    try:
        files = render_files(config, formats)
    except ValueError as exc:  # a config the renderer cannot express; ConfigError is a ValueError too
        raise ConfigError(f"cannot render: {exc}") from None
    if args.out.exists() and not args.out.is_dir():
        msg = f"--out {args.out} is not a directory; name a directory (it is created if missing)"
        raise ConfigError(msg)
    if args.check:
        drifted = drifted_files(files, args.out)
        for rel in drifted:
            print(f"drift: {args.out / rel} differs from what the renderer produces", file=sys.stderr)
        if drifted:
            print("run `make render` (or `subagent-telemetry render --out .`) and commit", file=sys.stderr)
            return EXIT_FAILED
        print(f"{len(files)} rendered files match")
        return EXIT_OK
    try:
        written = write_files(files, args.out)
    except OSError as exc:
        msg = f"cannot write the rendered files under {args.out}: {exc}"
        raise ConfigError(msg) from None
    for path in written:
        print(path)
    return EXIT_OK


def _render_overrides(config: Config, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    """``render --namespace/--label`` as config keys: every rendered Kubernetes object gets them."""

    def meta(current: dict[str, str]) -> dict[str, Any]:
        update: dict[str, Any] = {"labels": {**current, **labels}}
        if namespace is not None:
            update["namespace"] = namespace
        return update

    k8s = config.kubernetes
    return {
        "alerts": {"prometheus_rule": meta(config.alerts.prometheus_rule.labels)},
        "kubernetes": {"monitor": meta(k8s.monitor.labels), "dashboards": meta(k8s.dashboards.labels)},
    }


def _cmd_demo(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from ._telemetry import SubagentTelemetry  # noqa: PLC0415
    from .tools._demo import DemoOptions, run_demo  # noqa: PLC0415

    config = _load(args)
    # `docker stop` and process managers send SIGTERM: stop like Ctrl-C, so OTLP data is flushed.
    signal.signal(signal.SIGTERM, _interrupt)
    prom = config.telemetry.prometheus.model_copy(
        update={
            "port": args.port if args.port is not None else config.telemetry.prometheus.port,
            "listen_address": args.listen_address or config.telemetry.prometheus.listen_address,
        }
    )
    telemetry_update: dict[str, object] = {"prometheus": prom, "log_executions": False}
    if args.otlp_endpoint:
        otlp = config.telemetry.otlp
        telemetry_update["otlp"] = otlp.model_copy(update={"enabled": True, "endpoint": args.otlp_endpoint})
    config = config.model_copy(update={"telemetry": config.telemetry.model_copy(update=telemetry_update)})
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tel = SubagentTelemetry(config, registry=CollectorRegistry())
    with tel:
        if not args.no_serve:
            server = tel.serve()
            print(f"serving {server.url}", flush=True)
        options = DemoOptions(
            seed=args.seed,
            duration_seconds=args.duration,
            error_rate=args.error_rate,
            rate_per_second=args.rate,
            session_seconds=args.session_seconds,
            once=args.once,
        )
        try:
            run_demo(tel, options)
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subagent-telemetry",
        description="Quotas, metrics, alerts and dashboards for LLM subagents.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check a configuration file", formatter_class=_HelpFormatter)
    validate.add_argument("config_file", type=Path, nargs="?", metavar="FILE", help="same as --config")
    validate.add_argument("--config", "-c", type=Path, help="YAML configuration file")
    validate.add_argument(
        "--store",
        action="store_true",
        help="also check the limits against those pinned in the live quota.store",
    )
    validate.set_defaults(func=_cmd_validate)

    from .render import FORMATS  # noqa: PLC0415 - the format names only; render loads on use

    render = sub.add_parser(
        "render",
        help="render alert rules, dashboards and Kubernetes manifests from the config",
        formatter_class=_HelpFormatter,
        epilog="docs/deploy.md shows how to import each format into production.",
    )
    _add_config_args(render)
    render.add_argument("--out", type=Path, default=Path("deploy"), help="output directory")
    render.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        metavar="FORMAT",
        help=f"write only this format (repeatable): {', '.join(FORMATS)} (default: all but grafana-api)",
    )
    render.add_argument(
        "--namespace", help="namespace of every Kubernetes object (default: from the config: monitoring)"
    )
    render.add_argument(
        "--label",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="extra label on every Kubernetes object, e.g. release=prom (repeatable)",
    )
    render.add_argument("--check", action="store_true", help="fail if the files under --out differ (CI)")
    render.set_defaults(func=_cmd_render)

    demo = sub.add_parser(
        "demo", help="run a simulated agent that serves /metrics", formatter_class=_HelpFormatter
    )
    _add_config_args(demo)
    demo.add_argument("--port", type=_port, help="/metrics port (default: from the config: 9464)")
    demo.add_argument("--listen-address", help="/metrics address (default: from the config: 127.0.0.1)")
    demo.add_argument("--seed", type=int, help="random seed for a reproducible workload (default: random)")
    demo.add_argument(
        "--duration", type=_seconds, help="stop after this many seconds (default: until Ctrl-C)"
    )
    demo.add_argument("--error-rate", type=_ratio, default=0.05, help="share of failing executions (0-1)")
    demo.add_argument("--rate", type=_rate, default=2.0, help="top-level executions started per second")
    demo.add_argument(
        "--session-seconds", type=_seconds, default=120.0, help="a new budget every N s (and when spent)"
    )
    demo.add_argument(
        "--once",
        type=_positive_int,
        metavar="N",
        help="run N top-level executions, then exit (default: run on)",
    )
    demo.add_argument("--no-serve", action="store_true", help="do not serve /metrics")
    demo.add_argument(
        "--otlp-endpoint", help="also push OTLP metrics and traces here, flushed before exit (default: off)"
    )
    demo.set_defaults(func=_cmd_demo)
    _add_stack_parser(sub)
    _add_operator_parsers(sub)
    return parser


def _cmd_stack_up(args: argparse.Namespace) -> int:
    from .tools._stack import StackError, StackOptions, run_stack  # noqa: PLC0415

    options = StackOptions(
        config_path=args.config,
        preset=args.preset,
        compose_dir=args.compose_dir,
        workdir=args.workdir,
        demo_port=args.demo_port,
        prometheus_port=args.prometheus_port,
        alertmanager_port=args.alertmanager_port,
        alert_log_port=args.alert_log_port,
        error_rate=args.error_rate,
        rate_per_second=args.rate,
        session_seconds=args.session_seconds,
        seed=args.seed,
        scrape_interval=args.scrape_interval,
        evaluation_interval=args.evaluation_interval,
    )
    try:
        return run_stack(options)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _add_stack_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stack = sub.add_parser(
        "stack",
        help="the local stack without Docker (demo, Prometheus, Alertmanager)",
        formatter_class=_HelpFormatter,
    )
    actions = stack.add_subparsers(dest="stack_command", required=True)
    up = actions.add_parser(
        "up",
        help="start the compose stack's demo, Prometheus and Alertmanager on 127.0.0.1; Ctrl-C stops",
        formatter_class=_HelpFormatter,
    )
    _add_config_args(up)
    for name, default in (("demo", 9464), ("prometheus", 9090), ("alertmanager", 9093), ("alert-log", 9095)):
        up.add_argument(f"--{name}-port", type=_port, default=default, help="0 or taken = a free one")
    up.add_argument("--error-rate", type=_ratio, default=0.05, help="demo: share of failing executions")
    up.add_argument("--rate", type=_rate, default=2.0, help="demo: top-level executions per second")
    up.add_argument("--session-seconds", type=_seconds, default=120.0, help="demo: a new budget every N s")
    up.add_argument("--seed", type=int, help="demo: random seed (default: random)")
    up.add_argument("--scrape-interval", help="e.g. 1s (default: the compose config's)")
    up.add_argument("--evaluation-interval", help="e.g. 1s (default: the compose config's)")
    up.add_argument("--compose-dir", type=Path, help="folder of docker-compose.yml (default: ./compose)")
    up.add_argument("--workdir", type=Path, help="keep logs and data here (default: a temporary folder)")
    up.set_defaults(func=_cmd_stack_up)


def _cmd_top(args: argparse.Namespace) -> int:
    from .tools._top import TopOptions, run_top  # noqa: PLC0415 - rich only for this command

    options = TopOptions(
        url=args.url,
        config=_load(args),
        source=args.source,
        interval_seconds=args.interval,
        window_seconds=args.window,
        timeout_seconds=args.timeout,
        once=args.once,
    )
    return run_top(options)


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tools._tune import TuneOptions, run_tune  # noqa: PLC0415

    options = TuneOptions(
        url=args.url,
        config=_load(args) if (args.config or args.preset) else None,
        selector=args.selector,
        window=args.window,
        end_unix_seconds=args.end,
        margin=args.margin,
        token_budget=args.token_budget,
    )
    return run_tune(options)


def _cmd_report(args: argparse.Namespace) -> int:
    from .tools._report import ReportOptions, run_report  # noqa: PLC0415 - matplotlib only here

    options = ReportOptions(
        url=args.url,
        config=_load(args),
        out=args.out,
        window=args.window,
        start_unix_seconds=args.start,
        end_unix_seconds=args.end,
        title=args.title,
    )
    return run_report(options)


def _add_operator_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = _HelpFormatter
    top = sub.add_parser(
        "top",
        help="live terminal view of subagents from an agent's /metrics URL or a Prometheus URL (q quits)",
        formatter_class=fmt,
    )
    _add_config_args(top)
    top.add_argument("url", help="an agent's /metrics URL (one process) or a Prometheus base URL (a fleet)")
    top.add_argument(
        "--source",
        choices=("auto", "metrics", "prometheus"),
        default="auto",
        help="auto: a URL whose path ends in /metrics is an agent, anything else Prometheus",
    )
    top.add_argument("--interval", type=_seconds, default=1.0, help="seconds between refreshes")
    top.add_argument(
        "--window",
        type=_seconds,
        help="seconds of rates and ratios (default: from the config: alerts.rate_window)",
    )
    top.add_argument("--timeout", type=_seconds, default=2.0, help="seconds before a source counts as down")
    top.add_argument("--once", action="store_true", help="print one frame and exit (scripts, CI)")
    top.set_defaults(func=_cmd_top)

    tune = sub.add_parser(
        "tune", help="propose agent.subagent limits from what Prometheus observed", formatter_class=fmt
    )
    _add_config_args(tune)
    tune.add_argument("url", help="Prometheus base URL")
    tune.add_argument("--window", default="7d", help="how far back to look (Prometheus duration)")
    tune.add_argument("--end", type=_unix_time, help="end of the window, Unix seconds (default: now)")
    tune.add_argument(
        "--selector", help='label matchers, e.g. job="my-agent" (default: from the config: alerts.selector)'
    )
    tune.add_argument("--margin", type=_ratio, default=0.25, help="safety margin added to observed use")
    tune.add_argument(
        "--token-budget",
        type=_positive_int,
        help="tokens you can spend per session, taken as max_total_tokens (default: from the data)",
    )
    tune.set_defaults(func=_cmd_tune)

    report = sub.add_parser(
        "report", help="self-contained HTML report with PNG charts from Prometheus", formatter_class=fmt
    )
    _add_config_args(report)
    report.add_argument("url", help="Prometheus base URL")
    report.add_argument("--out", type=Path, default=Path("subagent-report"), help="output folder")
    report.add_argument("--window", default="1h", help="length of the window (Prometheus duration)")
    report.add_argument(
        "--start",
        type=_unix_time,
        help="start, Unix seconds, e.g. of a finished batch run (default: end - window)",
    )
    report.add_argument("--end", type=_unix_time, help="end, Unix seconds (default: now)")
    report.add_argument("--title", default="Subagent report", help="report title")
    report.set_defaults(func=_cmd_report)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default in (None, False) or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("subagent-telemetry")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "unknown"


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        msg = f"{text!r} is not KEY=VALUE (e.g. release=kube-prometheus-stack)"
        raise argparse.ArgumentTypeError(msg)
    return key, value


def _float_option(low: float, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number > ``low``, else one error naming ``what`` was expected."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low < value < math.inf:
            msg = f"{text} is not {what}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _int_option(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``, else one error naming ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            msg = f"{text} is not {what}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_seconds = _float_option(0.0, "a number of seconds > 0 (e.g. 2 or 0.5)")
_rate = _float_option(0.0, "a rate > 0 per second (e.g. 2 or 0.5)")
_unix_time = _float_option(-math.inf, "a time in Unix seconds (e.g. 1767225600 or $(date +%s))")
_port = _int_option(0, 65535, "a TCP port (0-65535)")
_positive_int = _int_option(1, 2**63, "a whole number >= 1")


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        msg = f"{text} is not between 0 and 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())

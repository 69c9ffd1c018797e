"""``SubagentTelemetry``: wires config, quota tracker, concurrency slots and backends for agent code."""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry

from ._config import Config
from ._errors import QuotaExceeded, missing_extra
from ._execution import CURRENT, ErrorClassifier, Execution, SubagentMetrics, live
from ._execution import _Parent as Parent
from ._labels import AgentLabelMapper, NameCache
from ._recorder import Backend, RateLimitedLog, Recorder
from ._vocab import Resource
from .backends._multiprocess import multiprocess_dir, multiprocess_registry
from .backends._prometheus import PrometheusBackend, QuotaCollector, register
from .backends._prometheus_mp import MultiprocessPrometheusBackend
from .backends._server import MetricsServer, serve_metrics
from .quota._prices import PriceBook
from .quota._slots import Slots
from .quota._store_policy import FailurePolicy
from .quota._tracker import Clock, InMemoryQuotaStore, QuotaLimits, QuotaStore, QuotaTracker

_log = logging.getLogger("subagent_telemetry")
_exec_log = logging.getLogger("subagent_telemetry.executions")

P = ParamSpec("P")
R = TypeVar("R")
#: Called when a budget's utilization first reaches ``alerts.quota_nearly_exhausted.threshold``.
QuotaWarningHook = Callable[[Resource, float, float], None]


class SubagentTelemetry:
    """Quotas, metrics and traces for every subagent execution of one agent program (one session).

    Everything global is injectable: ``registry`` (default: prometheus_client's), ``clock``,
    ``store``/``tracker``, and the OpenTelemetry ``meter_provider``/``tracer_provider``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock = time.monotonic,
        store: QuotaStore | None = None,
        tracker: QuotaTracker | None = None,
        meter_provider: Any = None,
        tracer_provider: Any = None,
        on_quota_warning: QuotaWarningHook | None = None,
        error_classifier: ErrorClassifier | None = None,
        backends: list[Backend] | None = None,
    ) -> None:
        self.config = config if config is not None else Config.default()
        sub = self.config.subagent
        self._clock = clock
        self._on_quota_warning = on_quota_warning
        self._error_classifier = error_classifier
        self._current: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
            "subagent_telemetry_current", default=None
        )
        self._slots = Slots(sub.max_concurrency)
        #: Bad measurements from agent code are dropped with a warning, at most once a minute.
        self._warn_dropped = RateLimitedLog(with_traceback=False)
        # Read on every execution: resolved once instead of through the config models.
        self._max_depth = sub.max_depth
        self._default_max_turns = sub.default_max_turns
        self._output_max_size = sub.output_max_size
        self._concurrency_timeout = sub.concurrency_timeout
        telemetry = self.config.telemetry
        #: Level of the per-execution log record; None when execution logging is off.
        self._log_level: int | None = (
            logging.getLevelName(telemetry.log_level) if telemetry.log_executions else None
        )
        label_cfg = self.config.telemetry.agent_label
        self._agent_label: Callable[[str], str] = (
            AgentLabelMapper(label_cfg) if label_cfg.enabled else _no_agent_label
        )
        #: Execution names, sanitized and mapped to the agent label once per distinct name.
        self._name_cache = NameCache(self._agent_label)
        self._names = self._name_cache.entries
        self.tracker = tracker if tracker is not None else self._make_tracker(store, clock)
        self._setup_cost()
        self.registry = registry if registry is not None else REGISTRY
        self._servers: list[MetricsServer] = []
        self._closed = False

        chosen: list[Backend] = []
        otlp = self.config.telemetry.otlp
        tracing = False
        if otlp.enabled or meter_provider is not None or tracer_provider is not None:
            try:
                from .backends._otel import OtelBackend  # noqa: PLC0415 - the OTel SDK loads only when enabled
            except ModuleNotFoundError as exc:
                needed_by = "telemetry.otlp.enabled is true" if otlp.enabled else "an OTel provider was given"
                raise missing_extra(exc, "otel", needed_by) from None

            otel = OtelBackend(
                self.config,
                meter_provider=meter_provider,
                tracer_provider=tracer_provider,
                usage=self.tracker.get_usage,
                limits=lambda: self.tracker.limits,
            )
            tracing = otel.tracing
            chosen.append(cast(Backend, otel))
        if self.config.telemetry.prometheus.enabled or registry is not None:
            self._quota_collector = QuotaCollector(
                lambda: self.tracker.limits,
                self.tracker.get_usage,
                self.config.quota.session,
                sub.max_concurrency,
            )
            register(self.registry, self._quota_collector)
            backend_class = PrometheusBackend if multiprocess_dir() is None else MultiprocessPrometheusBackend
            prometheus = backend_class(
                self.registry,
                max_depth=sub.max_depth,
                with_agent_label=label_cfg.enabled,
                with_model_label=self.config.telemetry.model_label.enabled,
                exemplars=tracing,
            )
            chosen.append(prometheus)
        policy = getattr(self.tracker.store, "policy", None)
        if isinstance(policy, FailurePolicy):  # A shared store counts its degraded decisions.
            hooks = [b.store_degraded for b in chosen if hasattr(b, "store_degraded")]

            def on_decision(policy_name: str, decision: str) -> None:
                for hook in hooks:  # Prometheus and OpenTelemetry alike.
                    hook(policy_name, decision)

            policy.on_decision = on_decision
        chosen.extend(backends or ())
        self._recorder = Recorder(chosen)

    def _setup_cost(self) -> None:
        """Prices and the ``model`` label: what pricing a model response needs (docs/cost.md)."""
        cost = self.config.cost
        model_cfg = self.config.telemetry.model_label
        #: The bounded ``model`` label value of a model name ("" when the label is off).
        self._model_label: Callable[[str], str] = (
            AgentLabelMapper(model_cfg) if model_cfg.enabled else _no_agent_label
        )
        #: Prices by model, resolved once each (config overrides, then the bundled genai-prices data).
        self._prices = PriceBook(cost.prices, bundled=cost.bundled_prices)
        #: A response of a model without a price raises CostLimitExceeded (cost.unpriced: refuse).
        self._refuse_unpriced = cost.unpriced == "refuse" and self.config.subagent.max_total_cost is not None

    def _make_tracker(self, store: QuotaStore | None, clock: Clock) -> QuotaTracker:
        if store is None:
            store = self._store_from_config(clock)
        limits = QuotaLimits.from_config(self.config.subagent, self.config.cost.currency)
        check = getattr(store, "check_limits", None)
        if self.config.quota.shared and check is not None:
            _check_pinned_limits(check, limits)
        return QuotaTracker(
            limits,
            store=store,
            clock=clock,
            warning_ratio=self.config.alerts.quota_nearly_exhausted.threshold,
            on_warning=self._quota_warning,
        )

    def _store_from_config(self, clock: Clock) -> QuotaStore:
        if self.config.quota.store == "memory":
            return InMemoryQuotaStore(clock)
        try:
            from .quota._redis_store import RedisQuotaStore  # noqa: PLC0415 - redis loads only when configured
        except ModuleNotFoundError as exc:
            raise missing_extra(exc, "redis", "quota.store is a Redis URL") from None

        return cast(QuotaStore, RedisQuotaStore.from_config(self.config))

    def _quota_warning(self, resource: Resource, used: float, limit: float) -> None:
        _log.warning(
            "subagent quota %s at %.0f%% of its limit (%g/%g); raise agent.subagent.%s before it runs out",
            resource.value,
            100 * used / limit,
            used,
            limit,
            _LIMIT_KEYS[resource],
        )
        if self._on_quota_warning is not None:
            try:
                self._on_quota_warning(resource, used, limit)
            except Exception:
                _log.warning("subagent_telemetry: the on_quota_warning hook raised", exc_info=True)

    # -- executions ----------------------------------------------------------------------------------

    def execution(self, name: str = "subagent", *, max_turns: int | None = None) -> Execution:
        """A context manager (``with`` or ``async with``) around one subagent execution."""
        return Execution(self, name, max_turns)

    def start(
        self,
        name: str = "subagent",
        *,
        parent: Execution | Literal[Parent.CURRENT] | None = CURRENT,
        depth: int | None = None,
        max_turns: int | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> SubagentMetrics:
        """A manual handle, admitted now, for frameworks whose start and end are separate callbacks.

        ``parent`` defaults to ``tel.current()``; ``None`` makes it top-level; any execution or handle
        nests it there (depth and span). Raises the ``QuotaExceeded`` subclass on refusal (docs/api.md).
        """
        return SubagentMetrics(self, name, depth, max_turns, parent=parent, model=model, provider=provider)

    def try_start(
        self,
        name: str = "subagent",
        *,
        parent: Execution | Literal[Parent.CURRENT] | None = CURRENT,
        depth: int | None = None,
        max_turns: int | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> SubagentMetrics | QuotaExceeded:
        """``start`` that returns the refusal (already counted) instead of raising it."""
        try:
            return SubagentMetrics(
                self, name, depth, max_turns, parent=parent, model=model, provider=provider
            )
        except QuotaExceeded as refusal:
            return refusal.with_traceback(None)  # The frames would keep the refused handle alive.

    async def astart(
        self,
        name: str = "subagent",
        *,
        parent: Execution | Literal[Parent.CURRENT] | None = CURRENT,
        depth: int | None = None,
        max_turns: int | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> SubagentMetrics:
        """``start`` for asyncio code: waiting for a slot or a shared store never blocks the loop."""
        handle = SubagentMetrics(
            self, name, depth, max_turns, parent=parent, model=model, provider=provider, _admit=False
        )
        await handle._admit_async(handle._nested)
        return handle

    async def try_astart(
        self,
        name: str = "subagent",
        *,
        parent: Execution | Literal[Parent.CURRENT] | None = CURRENT,
        depth: int | None = None,
        max_turns: int | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> SubagentMetrics | QuotaExceeded:
        """``astart`` that returns the refusal (already counted) instead of raising it."""
        try:
            return await self.astart(
                name, parent=parent, depth=depth, max_turns=max_turns, model=model, provider=provider
            )
        except QuotaExceeded as refusal:
            return refusal.with_traceback(None)

    def use(self, run: Execution | None) -> _Use:
        """``with tel.use(run):`` makes ``run`` the current execution for the block (``None``: none), so
        executions and handles started inside nest under it (depth and spans)."""
        if run is not None and not isinstance(run, Execution):
            msg = f"tel.use() takes an Execution, a SubagentMetrics handle or None, got {run!r}"
            raise TypeError(msg)
        return _Use(self, run)

    def current(self) -> Execution | None:
        """The innermost running execution in this context (thread or task), if any; never one that
        has finished."""
        run = self._current.get()
        return live(run) if run is not None and run._finished else run

    def instrument(
        self, name: str | None = None, *, max_turns: int | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator form: each call of the function (sync or async) is one execution."""

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            label = name or func.__name__
            if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
                # Calling one only creates the generator: the execution spans its iteration instead.
                return cast(Callable[P, R], self._instrument_generator(func, label, max_turns))
            if inspect.iscoroutinefunction(func):
                afunc = cast(Callable[P, Awaitable[Any]], func)

                @functools.wraps(func)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    async with self.execution(label, max_turns=max_turns):
                        return await afunc(*args, **kwargs)

                return cast(Callable[P, R], async_wrapper)

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                with self.execution(label, max_turns=max_turns):
                    return func(*args, **kwargs)

            return wrapper

        return decorate

    def _instrument_generator(self, func: Callable[..., Any], label: str, max_turns: int | None) -> Any:
        """``instrument`` for (async) generator functions: one execution per generator, from its first
        step to its end (exhausted, closed or failed); values sent and exceptions thrown are forwarded."""
        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.execution(label, max_turns=max_turns):
                    return (yield from func(*args, **kwargs))

            return gen_wrapper

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            agen = func(*args, **kwargs)
            async with self.execution(label, max_turns=max_turns):
                try:
                    item = await agen.__anext__()
                    while True:
                        try:
                            sent = yield item
                        except GeneratorExit:
                            await agen.aclose()
                            raise
                        except BaseException as exc:  # Thrown in: forwarded to the generator.
                            item = await agen.athrow(exc)
                        else:
                            item = await agen.asend(sent)
                except StopAsyncIteration:
                    return

        return agen_wrapper

    def new_session(self) -> None:
        """Start a new budget (zero usage; its clock starts at its first admission) with the same limits."""
        self.tracker.reset()

    # -- exposition and lifecycle --------------------------------------------------------------------

    def serve(self) -> MetricsServer:
        """Start the /metrics listener configured in ``telemetry.prometheus``.

        Raises ``RuntimeError`` after ``shutdown()``: nothing would ever close that listener.
        """
        if self._closed:
            msg = "serve() after shutdown(): this SubagentTelemetry is closed; create a new one"
            raise RuntimeError(msg)
        registry = self.registry
        if multiprocess_dir() is not None:  # One scrape answers for every worker (docs/fleet.md).
            registry = multiprocess_registry(self)
        server = serve_metrics(registry, self.config.telemetry.prometheus)
        self._servers.append(server)
        return server

    def shutdown(self, timeout_seconds: float | None = None) -> None:
        """Flush pushing backends (bounded by the timeout) and stop listeners. Idempotent."""
        if self._closed:
            return
        self._closed = True
        timeout = (
            timeout_seconds if timeout_seconds is not None else self.config.telemetry.otlp.timeout_seconds
        )
        self._recorder.shutdown(timeout)
        for server in self._servers:
            server.close()

    def __enter__(self) -> SubagentTelemetry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    def _log_execution(self, run: Execution) -> None:
        level = self._log_level
        if level is None or not _exec_log.isEnabledFor(level):  # Callers check None first (hot path).
            return
        outcome = run.status.value if run.status is not None else f"error:{run.error_type}"
        _exec_log.log(
            level,
            "subagent %s depth=%d %s duration=%.3fs turns=%d tokens=%d",
            run.name,
            run.depth,
            outcome,
            run.duration_seconds,
            run.turns,
            run.tokens,
            extra={
                "agent": run.name,
                "depth": run.depth,
                "status": run.status.value if run.status is not None else None,
                "error_type": run.error_type.value if run.error_type is not None else None,
                "duration_seconds": run.duration_seconds,
                "turns": run.turns,
                "tokens": run.tokens,
            },
        )


class _Use:
    """The context manager ``tel.use(run)`` returns (sync; usable in async code)."""

    __slots__ = ("_previous", "_run", "_tel", "_token", "_undo")

    def __init__(self, tel: SubagentTelemetry, run: Execution | None) -> None:
        self._tel = tel
        self._run = run
        self._token: contextvars.Token[Execution | None] | None = None
        self._previous: Execution | None = None
        self._undo: list[tuple[Any, object]] = []

    def __enter__(self) -> Execution | None:
        if self._token is not None:
            msg = "a tel.use() object can only be entered once at a time"
            raise RuntimeError(msg)
        tel, run = self._tel, self._run
        self._previous = tel._current.get()
        self._token = tel._current.set(run)
        if run is not None:
            self._undo = tel._recorder.activate(run)
        return run

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tel, token = self._tel, self._token
        self._token = None
        undo, self._undo = self._undo, []
        tel._recorder.deactivate(undo)
        if token is None:
            return
        try:
            tel._current.reset(token)
        except (ValueError, RuntimeError):
            # The block ended in another context: restore the previous execution there only if this
            # block's run is what that context sees as current (a copy taken inside the block).
            if tel._current.get() is self._run:
                tel._current.set(self._previous)


def _no_agent_label(name: str) -> str:
    return ""


_LIMIT_KEYS = {
    Resource.EXECUTIONS: "max_executions",
    Resource.TOKENS: "max_total_tokens",
    Resource.TIME_SECONDS: "max_total_time",
    Resource.COST: "max_total_cost",
}


def _check_pinned_limits(check: Callable[[QuotaLimits], None], limits: QuotaLimits) -> None:
    """Fail at startup, not at the first admission, when the shared session is pinned to other limits.

    An unreachable store does not stop the process from starting: its failure policy decides later.
    """
    try:
        check(limits)
    except QuotaExceeded as error:  # QuotaStoreUnavailable; the mismatch is a ConfigError and propagates.
        _log.warning("subagent_telemetry: could not check the pinned quota limits at startup: %s", error)

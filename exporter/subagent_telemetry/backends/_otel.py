"""OpenTelemetry backend: the catalog's metrics over OTLP and one span per execution.

Imported only when OTLP is enabled or a provider is passed, so ``import subagent_telemetry`` never loads
the OpenTelemetry SDK otherwise. Spans follow the GenAI semantic conventions (``invoke_agent {name}``,
kind INTERNAL) and nest like depth does: ``started`` makes the span current in the execution's context
and ``finished`` (called in the same context) restores the previous one.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable
from contextvars import Token
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode

from .._config import Config
from .._errors import QuotaExceeded
from .._execution import SubagentMetrics
from .._recorder import RunView
from .._vocab import ErrorType, Resource, Status
from ..quota._tracker import QuotaLimits, QuotaUsage
from ._otel_logs import install_rate_limit
from ._otel_metrics import OtelInstruments
from ._otel_setup import OwnedProviders, build_providers

_SCOPE = "subagent_telemetry"
_INVOKE_AGENT = "invoke_agent"


def _scope_version() -> str:
    try:
        return version("subagent-telemetry")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "0"


class _RunState:
    """What the backend keeps per execution: its span, the context token, and subtree token totals."""

    __slots__ = (
        "ended",
        "outer",
        "span",
        "subtree_cost_nanos",
        "subtree_executions",
        "subtree_input",
        "subtree_output",
        "subtree_tokens",
        "token",
    )

    def __init__(self, span: Any, token: Token[Context] | None) -> None:
        self.span = span
        self.token = token
        self.ended = False
        #: The context current before this span was attached (restored if exits come out of order).
        self.outer: Context | None = None
        if token is not None:
            outer = token.old_value
            self.outer = Context() if outer is Token.MISSING else outer
        #: Totals of finished descendants (this execution's own tokens are added when it finishes).
        self.subtree_input = 0
        self.subtree_output = 0
        #: Every token, including totals recorded without an input/output split.
        self.subtree_tokens = 0
        self.subtree_executions = 0
        self.subtree_cost_nanos = 0


class OtelBackend:
    """Records executions as OTel metrics and spans (each part on when its provider exists)."""

    def __init__(
        self,
        config: Config,
        *,
        meter_provider: Any = None,
        tracer_provider: Any = None,
        usage: Callable[[], QuotaUsage],
        limits: Callable[[], QuotaLimits],
    ) -> None:
        otlp = config.telemetry.otlp
        self._owned = build_providers(
            config,
            metrics=otlp.enabled and otlp.metrics and meter_provider is None,
            traces=otlp.enabled and otlp.traces and tracer_provider is None,
        )
        meter_provider = meter_provider or self._owned.meter_provider
        tracer_provider = tracer_provider or self._owned.tracer_provider
        self._timeout_seconds = otlp.timeout_seconds
        self._currency = config.cost.currency
        self._config = config
        self._usage = usage
        self._limits = limits
        self._lock = threading.Lock()
        self._metrics: OtelInstruments | None = (
            self._instruments(meter_provider) if meter_provider is not None else None
        )
        self._tracer: Any = (
            tracer_provider.get_tracer(_SCOPE, _scope_version()) if tracer_provider is not None else None
        )
        if self._owned.meter_provider is not None or self._owned.tracer_provider is not None:
            install_rate_limit()
            atexit.register(self._flush_at_exit)
            _OWNING.add(self)

    def _instruments(self, meter_provider: Any) -> OtelInstruments:
        config = self._config
        sub = config.subagent
        return OtelInstruments(
            meter_provider.get_meter(_SCOPE, _scope_version()),
            with_agent_label=config.telemetry.agent_label.enabled,
            with_model_label=config.telemetry.model_label.enabled,
            max_depth=sub.max_depth,
            session=config.quota.session,
            max_concurrency=sub.max_concurrency,
            usage=self._usage,
            limits=self._limits,
            genai_metrics=config.telemetry.otlp.genai_metrics,
        )

    def _forked(self) -> None:
        """In a forked child: providers of its own (its pid in ``service.instance.id``, counts from zero)
        replace the copies of the parent's, which stay silent (their exporters send from the parent only)."""
        inherited = self._owned
        metrics, traces = inherited.meter_provider is not None, inherited.tracer_provider is not None
        self._lock = threading.Lock()
        self._owned = build_providers(self._config, metrics=metrics, traces=traces)
        if self._owned.meter_provider is not None:
            self._metrics = self._instruments(self._owned.meter_provider)
        if self._owned.tracer_provider is not None:
            self._tracer = self._owned.tracer_provider.get_tracer(_SCOPE, _scope_version())
        # Stops the copies' export threads; off this thread: a copied lock may be held for ever.
        threading.Thread(target=inherited.shutdown, args=(1.0,), daemon=True).start()

    @property
    def tracing(self) -> bool:
        """Spans are recorded (the scrape path then carries trace-id exemplars)."""
        return self._tracer is not None

    @property
    def owned(self) -> OwnedProviders:
        """The providers built from the config (none when the caller passed both)."""
        return self._owned

    # -- the Backend protocol -------------------------------------------------------------------------

    def started(self, run: RunView) -> None:
        m = self._metrics
        if m is not None:
            attrs = m.bound(run.depth_label, run.agent).base
            m.executions.add(1, attrs)
            m.active.add(1, attrs)
        if self._tracer is not None:
            span = self._start_span(run)
            run.trace_id = format(span.get_span_context().trace_id, "032x")
            # A manual handle starts and ends in different callbacks: making its span current here
            # could not be undone in the right context, so it only parents on what is current now.
            token = (
                None
                if isinstance(run, SubagentMetrics)
                else otel_context.attach(trace.set_span_in_context(span))
            )
            run.backend_state = _RunState(span, token)

    def refused(self, run: RunView, error: QuotaExceeded) -> None:
        m = self._metrics
        if m is not None:
            attrs = m.bound(run.depth_label, run.agent)
            m.executions.add(1, attrs.base)
            m.errors.add(1, attrs.by_error[error.error_type])
            m.rejected(error.resource)
        if self._tracer is not None:
            span = self._start_span(run)
            run.trace_id = format(span.get_span_context().trace_id, "032x")
            span.add_event("subagent.quota_refused", _quota_event(error.resource, error.used, error.limit))
            span.set_attribute("error.type", error.error_type.value)
            span.set_status(StatusCode.ERROR, str(error))
            span.end()

    def quota_stopped(self, run: RunView, resource: Resource) -> None:
        m = self._metrics
        if m is not None:
            m.rejected(resource)
        state = run.backend_state
        if isinstance(state, _RunState):
            state.span.add_event("subagent.quota_exceeded", {"subagent.quota.resource": resource.value})

    def turn_limit(self, run: RunView) -> None:
        state = run.backend_state
        if isinstance(state, _RunState):
            state.span.add_event("subagent.turn_limit", {"subagent.turns": run.turns})

    def truncated(self, run: RunView, size_bytes: int, limit_bytes: int) -> None:
        m = self._metrics
        if m is not None:
            m.truncations.add(1, m.bound(run.depth_label, run.agent).base)
        state = run.backend_state
        if isinstance(state, _RunState):
            state.span.add_event(
                "subagent.output_truncated",
                {"subagent.output.size_bytes": size_bytes, "subagent.output.limit_bytes": limit_bytes},
            )

    def finished(self, run: RunView) -> None:
        # Metrics first: while the span is still current, OTel exemplars pick up its trace id.
        if self._metrics is not None:
            self._record_metrics(run)
        state = run.backend_state
        if isinstance(state, _RunState):
            self._end_span(run, state)

    def activate(self, run: RunView) -> Token[Context] | None:
        """``tel.use(run)``: the run's span becomes current, so spans started in the block nest under it."""
        state = run.backend_state
        if not isinstance(state, _RunState):
            return None
        return otel_context.attach(trace.set_span_in_context(state.span))

    def deactivate(self, token: Token[Context] | None) -> None:
        if token is not None:
            _detach(token)

    def store_degraded(self, policy: str, decision: str) -> None:
        """An admission decided without the shared quota store (see ``quota.failure_policy``)."""
        if self._metrics is not None:
            self._metrics.degraded.add(1, {"policy": policy, "decision": decision})

    def shutdown(self, timeout_seconds: float) -> None:
        """Flush and shut down the providers built here, waiting at most ``timeout_seconds``."""
        atexit.unregister(self._flush_at_exit)
        self._owned.shutdown(timeout_seconds)

    def _flush_at_exit(self) -> None:
        self._owned.shutdown(self._timeout_seconds)

    # -- helpers --------------------------------------------------------------------------------------

    def _record_metrics(self, run: RunView) -> None:
        m = self._metrics
        assert m is not None
        attrs = m.bound(run.depth_label, run.agent)
        base = attrs.base
        m.active.add(-1, base)
        m.turns.record(run.turns, base)
        m.tokens.record(run.tokens, base)
        status = run.status
        if status is not None:
            by_status = attrs.by_status[status]
            m.duration.record(run.duration_seconds, by_status)
            m.completions.add(1, by_status)
        else:
            # Failed executions are timed under "incomplete", as on the scrape path.
            m.duration.record(run.duration_seconds, attrs.by_status[Status.INCOMPLETE])
            m.errors.add(1, attrs.by_error[run.error_type or ErrorType.EXECUTION_FAILED])
        if run.model is not None:
            cost_attrs = m.cost_attrs(run.depth_label, run.agent, run.model_label)
            cost = run.cost_nanos / 1e9
            m.cost.record(cost, cost_attrs)
            m.cost_total.add(cost, cost_attrs)
            m.unpriced.add(run.unpriced_tokens, cost_attrs)
        if m.genai_tokens is not None:
            self._record_genai(m, run)

    def _record_genai(self, m: OtelInstruments, run: RunView) -> None:
        common: dict[str, str] = {"gen_ai.operation.name": _INVOKE_AGENT}
        if run.agent:
            common["gen_ai.agent.name"] = run.agent
        m.genai_tokens.record(run.input_tokens, {**common, "gen_ai.token.type": "input"})
        m.genai_tokens.record(run.output_tokens, {**common, "gen_ai.token.type": "output"})
        if run.error_type is not None:
            common["error.type"] = run.error_type.value
        m.genai_duration.record(run.duration_seconds, common)

    def _start_span(self, run: RunView) -> Any:
        # Nested where it started, the parent's span is in the ambient context (or a span the agent
        # opened inside it is, which must stay the parent). A parent passed explicitly, or found past
        # a finished execution, is linked directly.
        parent = run.parent
        context = None
        if parent is not None and not run.parent_in_context:
            parent_state = parent.backend_state
            if isinstance(parent_state, _RunState):
                context = trace.set_span_in_context(parent_state.span)
        return self._tracer.start_span(
            f"{_INVOKE_AGENT} {run.name}",
            context=context,
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": _INVOKE_AGENT,
                "gen_ai.agent.name": run.name,
                "subagent.depth": run.depth,
            },
        )

    def _end_span(self, run: RunView, state: _RunState) -> None:
        span = state.span
        subtree_input = state.subtree_input + run.input_tokens
        subtree_output = state.subtree_output + run.output_tokens
        subtree_tokens = state.subtree_tokens + run.tokens
        subtree_cost = state.subtree_cost_nanos + run.cost_nanos
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": run.input_tokens,
                "gen_ai.usage.output_tokens": run.output_tokens,
                "subagent.tokens": run.tokens,
                "subagent.turns": run.turns,
                "subagent.subtree.input_tokens": subtree_input,
                "subagent.subtree.output_tokens": subtree_output,
                "subagent.subtree.total_tokens": subtree_tokens,
                "subagent.subtree.executions": state.subtree_executions + 1,
            }
        )
        if run.model is not None:
            span.set_attribute("gen_ai.response.model", run.model)
        if run.provider is not None:
            span.set_attribute("gen_ai.provider.name", run.provider)
        if run.model is not None or subtree_cost:
            self._set_cost_attributes(span, run, subtree_cost)
        if run.status is not None:
            span.set_attribute("subagent.status", run.status.value)
        else:
            error_type = (run.error_type or ErrorType.EXECUTION_FAILED).value
            span.set_attribute("error.type", error_type)
            span.set_status(StatusCode.ERROR, error_type)
        parent = run.parent
        parent_state = parent.backend_state if parent is not None else None
        if isinstance(parent_state, _RunState):
            with self._lock:  # Sibling threads may finish at once.
                parent_state.subtree_input += subtree_input
                parent_state.subtree_output += subtree_output
                parent_state.subtree_tokens += subtree_tokens
                parent_state.subtree_executions += state.subtree_executions + 1
                parent_state.subtree_cost_nanos += subtree_cost
        token = state.token
        if token is not None:
            state.token = None
            restored = _detach(token)
            if not restored or (isinstance(parent_state, _RunState) and parent_state.ended):
                _repair_context(run)
        state.ended = True
        span.end()

    def _set_cost_attributes(self, span: Any, run: RunView, subtree_cost_nanos: int) -> None:
        """Cache and reasoning usage (GenAI semantic conventions) and the money spent."""
        attributes: dict[str, Any] = {
            "subagent.cost": run.cost_nanos / 1e9,
            "subagent.subtree.cost": subtree_cost_nanos / 1e9,
            "subagent.cost.currency": self._currency,
        }
        if run.cache_read_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = run.cache_read_tokens
        if run.cache_write_tokens:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = run.cache_write_tokens
        if run.reasoning_tokens:
            attributes["gen_ai.usage.reasoning.output_tokens"] = run.reasoning_tokens
        if run.unpriced_tokens:
            attributes["subagent.unpriced_tokens"] = run.unpriced_tokens
        span.set_attributes(attributes)


def _detach(token: Token[Context]) -> bool:
    """Restore the OTel context of ``token``; ``False`` when the execution ends in another context (a
    generator finalized elsewhere): that context is left as it is, without the SDK's error log."""
    if isinstance(token, Token):
        try:
            token.var.reset(token)
        except (ValueError, RuntimeError):
            return False
        return True
    otel_context.detach(token)  # pragma: no cover - a runtime context other than contextvars
    return True


def _repair_context(run: RunView) -> None:
    """After an exit out of order (interleaved generators) or in another context, the current context
    may show this run's span or an ancestor's that already ended: point it at the nearest live
    ancestor's span, or at what was current before the outermost ended one, so later spans never
    become children of an ended execution."""
    current = trace.get_current_span()
    stale = False
    target: Context | None = None
    node: RunView | None = run
    while node is not None:
        state = node.backend_state
        if not isinstance(state, _RunState):
            break
        if node is not run and not state.ended:
            target = trace.set_span_in_context(state.span)
            break
        stale = stale or state.span is current
        target = state.outer
        node = node.parent
    if stale and target is not None:
        otel_context.attach(target)


def _quota_event(resource: Resource, used: float, limit: float) -> dict[str, Any]:
    return {
        "subagent.quota.resource": resource.value,
        "subagent.quota.used": used,
        "subagent.quota.limit": limit,
    }


#: Backends exporting through providers built here: a forked child rebuilds them as its own.
_OWNING: weakref.WeakSet[OtelBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_OWNING):
        backend._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)

"""LangGraph: every graph invocation and every compiled subgraph is a subagent execution.

    from subagent_telemetry.integrations import langgraph
    langgraph.instrument(tel)            # every graph run in this process from now on

or per run: ``graph.invoke(state, config={"callbacks": [langgraph.callback_handler(tel)]})``.

What is counted (docs/integrations.md):

- subagent = a graph run (``invoke``/``ainvoke``/``stream``/``astream``) and each compiled subgraph
  run inside it (all of them, or only those named in ``subgraphs=``); a subgraph left out is
  transparent: its model calls count for the nearest enclosing subagent.
- turn = one chat-model call, counted when the call starts (a turn limit stops it before the model
  is called); tokens = the ``usage_metadata`` of each ``on_llm_end``.
- ``GraphRecursionError`` (LangGraph's own step limit) ends the run as ``incomplete``.
- A quota refusal raises from the callback (``raise_error = True``) before the subgraph's first node
  runs, so the graph fails with the quota exception, as a ``with tel.execution()`` block would.

The seam is LangChain's public callback system: ``instrument()`` registers one configure hook
(``langchain_core.tracers.context.register_configure_hook``) that adds the handler to every run while
instrumented. LangChain may call handlers from executor threads with copied contexts, so nothing here
relies on context variables: runs are tracked by ``run_id``/``parent_run_id``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.outputs import ChatGeneration, LLMResult
    from langchain_core.tracers.context import register_configure_hook
    from langgraph.errors import GraphInterrupt, GraphRecursionError, ParentCommand
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    msg = (
        "subagent_telemetry.integrations.langgraph needs langgraph and langchain-core "
        f"({error.name} is missing): pip install 'subagent-telemetry[langgraph]'"
    )
    raise ImportError(msg) from None

from .._errors import QuotaExceeded
from .._vocab import Status

if TYPE_CHECKING:
    from contextvars import ContextVar

    from .._execution import Execution, SubagentMetrics
    from .._telemetry import SubagentTelemetry

__all__ = ["SUPPORTED_VERSIONS", "SubagentCallbackHandler", "callback_handler", "instrument", "uninstrument"]

#: The releases this module is tested against (pyproject's ``langgraph`` extra).
SUPPORTED_VERSIONS = {"langgraph": ">=1.2.24,<2", "langchain-core": ">=1.8.3,<2"}

_log = logging.getLogger("subagent_telemetry")
#: LangGraph tags every task (node) run of a graph step with this prefix; the task's parent is the graph.
_STEP_TAG = "graph:step:"


class _Run:
    """One LangChain run we have seen start: a graph, a node, a model call or a tool."""

    __slots__ = (
        "admitted",
        "graph",
        "handle",
        "lock",
        "model",
        "name",
        "outer",
        "owner",
        "provider",
        "refusal",
    )

    def __init__(self, name: str, owner: _Run | None, outer: Execution | None) -> None:
        self.name = name
        #: The run whose execution this one's model calls count for (itself once admitted).
        self.owner = owner
        #: The execution current where this run started outside any recorded graph (a root's parent).
        self.outer = outer
        self.handle: SubagentMetrics | None = None
        self.graph = False
        self.admitted = False
        self.refusal: QuotaExceeded | None = None
        self.lock = threading.Lock()
        self.model: str | None = None
        self.provider: str | None = None


_Callback = TypeVar("_Callback", bound=Callable[..., None])


def _guarded(method: _Callback) -> _Callback:
    """Let quota errors through (they must stop the graph); log anything else instead of raising it
    into the graph, which ``raise_error = True`` would do."""

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except QuotaExceeded:
            raise
        except Exception:
            _log.warning("subagent_telemetry: LangGraph %s not recorded", method.__name__, exc_info=True)

    return cast(_Callback, guarded)


class SubagentCallbackHandler(BaseCallbackHandler):
    """Records graph runs as subagent executions (one handler can serve every run in the process)."""

    #: Quota refusals must stop the graph: LangChain re-raises a handler's exception only with this.
    raise_error = True

    def __init__(self, tel: SubagentTelemetry, *, subgraphs: Collection[str] | None = None) -> None:
        self.tel = tel
        self.subgraphs = None if subgraphs is None else frozenset(subgraphs)
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()

    # -- run tracking --------------------------------------------------------------------------------

    def _start(self, run_id: UUID, parent_run_id: UUID | None, tags: list[str] | None, name: str) -> _Run:
        """Remember the run; admit its graph when it is a graph's task (node)."""
        with self._lock:
            parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
        owner = parent.owner if parent is not None else None
        # Where a graph starts outside any recorded graph, the current execution is its parent.
        run = _Run(name, owner, self.tel.current() if owner is None else None)
        if parent is not None and tags and any(tag.startswith(_STEP_TAG) for tag in tags):
            self._admit(parent)
            run.owner = parent.owner
        with self._lock:
            self._runs[run_id] = run
        return run

    def _admit(self, graph: _Run) -> None:
        """Start the execution of ``graph`` once (its tasks may start in parallel threads)."""
        with graph.lock:
            if graph.admitted:
                if graph.refusal is not None:
                    raise graph.refusal  # Counted once, when it was refused.
                return
            graph.admitted = True
            graph.graph = True
            root = graph.owner is None
            if not root and self.subgraphs is not None and graph.name not in self.subgraphs:
                return  # Transparent: its calls count for the enclosing subagent.
            parent = graph.owner.handle if graph.owner is not None else graph.outer
            result = self.tel.try_start(graph.name, parent=parent)
            if isinstance(result, QuotaExceeded):
                graph.refusal = result
                raise result
            graph.handle = result
            graph.owner = graph

    def _end(self, run_id: UUID, error: BaseException | None) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is None or run.handle is None or run.owner is not run:
            return
        handle = run.handle
        run.handle = None
        if error is None:
            handle.finish()
        elif isinstance(error, GraphRecursionError):
            handle.finish(status=Status.INCOMPLETE)  # LangGraph's own step limit: a partial result.
        elif isinstance(error, ParentCommand):
            handle.finish()  # Control flow: the subgraph handed over to its parent.
        elif isinstance(error, GraphInterrupt):
            handle.finish(status=Status.INCOMPLETE)  # Paused for human input.
        else:
            handle.finish(error)

    def _owner_handle(self, run_id: UUID) -> SubagentMetrics | None:
        with self._lock:
            run = self._runs.get(run_id)
        owner = run.owner if run is not None else None
        return owner.handle if owner is not None else None

    # -- LangChain callbacks -------------------------------------------------------------------------

    @_guarded
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id, tags, str(kwargs.get("name") or _name(serialized, "graph")))

    @_guarded
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None)

    @_guarded
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    @_guarded
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(run_id, parent_run_id, tags, metadata)

    @_guarded
    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(run_id, parent_run_id, tags, metadata)

    def _model_start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        run = self._start(run_id, parent_run_id, tags, "model")
        handle = run.owner.handle if run.owner is not None else None
        if handle is None:
            return
        if metadata:
            run.model = _str_or_none(metadata.get("ls_model_name"))
            run.provider = _str_or_none(metadata.get("ls_provider"))
        handle.record_turn()  # TurnLimitExceeded stops the call before the model is asked.

    @_guarded
    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        handle = run.owner.handle if run is not None and run.owner is not None else None
        if handle is None or run is None:
            return
        usage = _usage(response)
        if usage is not None:
            handle.record_tokens(**usage, model=run.model, provider=run.provider)

    @_guarded
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    @_guarded
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id, tags, str(kwargs.get("name") or "tool"))

    @_guarded
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    @_guarded
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


def _name(serialized: dict[str, Any] | None, default: str) -> str:
    if serialized:
        name = serialized.get("name")
        if isinstance(name, str):
            return name
    return default


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _usage(response: LLMResult) -> dict[str, int] | None:
    """``record_tokens`` arguments of one model call, from the first generation's ``usage_metadata``.

    LangChain's ``input_tokens`` include the prompt-cache reads and writes detailed in
    ``input_token_details`` (``cache_read``, ``cache_creation``), and ``output_tokens`` the reasoning in
    ``output_token_details``: passed on as parts, they are priced at their own rates (docs/cost.md).
    Providers that return several candidates (``n > 1``) attach the call's usage to each of them, so
    only one is counted.
    """
    for generations in response.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                usage = getattr(generation.message, "usage_metadata", None)
                if usage:
                    read_in = usage.get("input_token_details") or {}
                    read_out = usage.get("output_token_details") or {}
                    return {
                        "input": int(usage.get("input_tokens", 0)),
                        "output": int(usage.get("output_tokens", 0)),
                        "cache_read": int(read_in.get("cache_read") or 0),
                        "cache_write": int(read_in.get("cache_creation") or 0),
                        "reasoning": int(read_out.get("reasoning") or 0),
                    }
    return None


def callback_handler(
    tel: SubagentTelemetry, *, subgraphs: Collection[str] | None = None
) -> SubagentCallbackHandler:
    """A handler for one run's ``config={"callbacks": [...]}`` (do not combine with ``instrument``)."""
    return SubagentCallbackHandler(tel, subgraphs=subgraphs)


class _ActiveHandler:
    """What the configure hook reads: the instrumented handler, or None once uninstrumented.

    LangChain's hook API takes a context variable; only its ``get()`` is called, and a process-wide
    switch must answer the same in every thread and task, which a context variable set in one context
    does not. LangChain has no way to remove a hook, so uninstrument() turns this one off.
    """

    def __init__(self) -> None:
        self.handler: SubagentCallbackHandler | None = None
        self.registered = False

    def get(self) -> SubagentCallbackHandler | None:
        return self.handler


_active = _ActiveHandler()
_install_lock = threading.Lock()


def instrument(tel: SubagentTelemetry, *, subgraphs: Collection[str] | None = None) -> None:
    """Record every LangGraph run in this process from now on; a second call warns and does nothing."""
    with _install_lock:
        if _active.handler is not None:
            _log.warning("subagent_telemetry: LangGraph is already instrumented; call uninstrument() first")
            return
        if not _active.registered:
            register_configure_hook(cast("ContextVar[Any]", _active), inheritable=True)
            _active.registered = True
        _active.handler = SubagentCallbackHandler(tel, subgraphs=subgraphs)


def uninstrument() -> None:
    """Stop recording LangGraph runs started from now on (runs in flight finish as they started)."""
    with _install_lock:
        _active.handler = None

"""A simulated agent: nested subagents (depths 1-3) with realistic turns, tokens, errors and quota hits.

It uses only the public execution API, so what it exports is exactly what a real agent would export.
Sessions restart every ``session_seconds`` (a new budget), so quota gauges rise, hit their limits,
produce refusals, and start again: every dashboard panel and alert has something to show.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from .._errors import QuotaExceeded, SubagentInputError
from .._execution import Execution
from .._telemetry import SubagentTelemetry

AGENT_NAMES = ("planner", "researcher", "coder", "reviewer", "summarizer")
#: The model (and provider) each demo agent calls: a small mix of prices, so cost shows on day one.
#: ``demo-local-llm`` has no price (a self-hosted model): its tokens show as unpriced.
MODELS: dict[str, tuple[str, str | None]] = {
    "planner": ("claude-sonnet-4-5", "anthropic"),
    "researcher": ("gpt-4o-mini", "openai"),
    "coder": ("gpt-4o", "openai"),
    "reviewer": ("gemini-2.5-flash", "google"),
    "summarizer": ("demo-local-llm", None),
}


class SimulatedError(RuntimeError):
    """The demo's stand-in for a failing model or tool call."""


@dataclass
class DemoOptions:
    seed: int | None = None
    duration_seconds: float | None = None
    error_rate: float = 0.05
    rate_per_second: float = 2.0
    #: Requests handled at once, like an agent server's worker pool. Each request is a delegation tree
    #: (depth <= 3), so two keep the default max_concurrency of 5 busy without starving the children.
    parallel_requests: int = 2
    #: A session (one budget) lasts at most this long; it also ends when its budget is spent.
    session_seconds: float = 120.0
    #: Real seconds slept per simulated second of model latency (a turn is 0.2-3 simulated s).
    time_scale: float = 0.1
    summary_every_seconds: float = 5.0
    once: int | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class DemoStats:
    """Counts in the metric vocabulary: ``executions == completions + errors`` (refusals are errors)."""

    executions: int = 0
    completions: int = 0
    errors: int = 0
    #: Errors that were refusals at admission (``subagent_quota_rejections_total`` counts these).
    refused: int = 0

    def count(self, run: Execution, admitted: bool) -> None:
        """Count one execution that has ended, by its recorded outcome."""
        self.executions += 1
        if run.status is not None:
            self.completions += 1
        else:
            self.errors += 1
            self.refused += not admitted


class Demo:
    def __init__(self, tel: SubagentTelemetry, options: DemoOptions) -> None:
        self.tel = tel
        self.options = options
        self.rng = random.Random(options.seed)
        self.stats = DemoStats()

    async def _subagent(self, name: str, fanout: int) -> None:
        run = self.tel.execution(name)
        admitted = False
        try:
            async with run:
                admitted = True
                await self._work(run, fanout)
        except (QuotaExceeded, SimulatedError, SubagentInputError, TimeoutError):
            pass  # Recorded by the execution; counted below from its outcome.
        self.stats.count(run, admitted)

    async def _work(self, run: Execution, fanout: int) -> None:
        opts, rng = self.options, self.rng
        turns = max(1, min(int(rng.lognormvariate(1.0, 0.6)), run.max_turns + 1))
        for _ in range(turns):
            run.record_turn()  # May raise TurnLimitExceeded → recorded as status="incomplete".
            await asyncio.sleep(rng.uniform(0.2, 3.0) * opts.time_scale)
            model, provider = MODELS.get(run.name, MODELS["coder"])
            tokens_in = int(rng.lognormvariate(6.5, 0.8))
            run.record_tokens(
                input=tokens_in,
                output=int(rng.lognormvariate(5.0, 0.7)),
                model=model,
                provider=provider,
                cache_read=tokens_in // 2 if rng.random() < 0.3 else 0,  # Some prompts hit the cache.
            )
        if fanout and run.depth < 3:
            for _ in range(rng.randint(0, fanout)):  # Delegations one after another, as most agents do.
                await self._subagent(rng.choice(AGENT_NAMES), fanout - 1)
        roll = rng.random()
        if roll < opts.error_rate * 0.8:
            raise SimulatedError("the model call failed")
        if roll < opts.error_rate * 0.9:
            raise SubagentInputError("the task was malformed")
        if roll < opts.error_rate:
            raise TimeoutError("a tool call timed out")
        run.set_output("result " * rng.randint(10, 400))

    async def run(self) -> DemoStats:
        """``parallel_requests`` workers each handle one request (a delegation tree) at a time."""
        opts = self.options
        self._started = time.monotonic()
        self._next_session = self._started + opts.session_seconds
        self._launched = 0
        reporter = asyncio.create_task(self._report())
        try:
            await asyncio.gather(*(self._worker() for _ in range(opts.parallel_requests)))
        finally:
            reporter.cancel()
        self._summary()
        return self.stats

    def _done(self) -> bool:
        opts = self.options
        if opts.once is not None:
            return self._launched >= opts.once
        return opts.duration_seconds is not None and time.monotonic() - self._started >= opts.duration_seconds

    async def _worker(self) -> None:
        opts, rng = self.options, self.rng
        while not self._done():
            now = time.monotonic()
            if now >= self._next_session or self._budget_spent():
                # Like a real agent, the next task gets a fresh budget; refusals still happen when a
                # budget runs out in the middle of a delegation tree.
                self.tel.new_session()
                self._next_session = now + opts.session_seconds
            self._launched += 1
            await self._subagent(rng.choice(AGENT_NAMES), fanout=2)
            if opts.once is None:
                await asyncio.sleep(rng.expovariate(opts.rate_per_second / opts.parallel_requests))

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.summary_every_seconds)
            self._summary()

    def _budget_spent(self) -> bool:
        tracker = self.tel.tracker
        return 0 in (
            tracker.remaining_executions(),
            tracker.remaining_tokens(),
            tracker.remaining_time(),
            tracker.remaining_cost(),
        )

    def _summary(self) -> None:
        s, usage = self.stats, self.tel.tracker.get_usage()
        print(
            f"executions={s.executions} completions={s.completions} errors={s.errors} (refused={s.refused}) "
            f"| session: executions={usage.executions} tokens={usage.total_tokens} "
            f"elapsed={usage.elapsed_seconds:.0f}s",
            file=self.options.out,
            flush=True,
        )


def run_demo(tel: SubagentTelemetry, options: DemoOptions) -> DemoStats:
    return asyncio.run(Demo(tel, options).run())

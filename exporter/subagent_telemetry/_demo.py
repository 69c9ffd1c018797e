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

from ._errors import QuotaExceeded, SubagentInputError
from ._execution import Execution
from ._telemetry import SubagentTelemetry
from ._vocab import BUDGET_RESOURCES

AGENT_NAMES = ("planner", "researcher", "coder", "reviewer", "summarizer")


class SimulatedError(RuntimeError):
    """The demo's stand-in for a failing model or tool call."""


@dataclass
class DemoOptions:
    seed: int | None = None
    duration_seconds: float | None = None
    error_rate: float = 0.05
    rate_per_second: float = 2.0
    #: A session (one budget) lasts at most this long; it also ends shortly after its budget runs out.
    session_seconds: float = 120.0
    exhausted_pause_seconds: float = 2.0
    #: Real seconds slept per simulated second of model latency (a turn is 0.2-3 simulated s).
    time_scale: float = 0.1
    summary_every_seconds: float = 5.0
    once: int | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class DemoStats:
    started: int = 0
    refused: int = 0
    failed: int = 0
    completed: int = 0


class Demo:
    def __init__(self, tel: SubagentTelemetry, options: DemoOptions) -> None:
        self.tel = tel
        self.options = options
        self.rng = random.Random(options.seed)
        self.stats = DemoStats()
        #: When the session's budget first refused an execution; the next session starts shortly after.
        self.exhausted_at: float | None = None

    async def _subagent(self, name: str, fanout: int) -> None:
        try:
            async with self.tel.execution(name) as run:
                self.stats.started += 1
                await self._work(run, fanout)
            self.stats.completed += 1
        except QuotaExceeded as error:
            self.stats.refused += 1
            if error.resource in BUDGET_RESOURCES and self.exhausted_at is None:
                self.exhausted_at = time.monotonic()
        except (SimulatedError, SubagentInputError, TimeoutError):
            self.stats.failed += 1

    async def _work(self, run: Execution, fanout: int) -> None:
        opts, rng = self.options, self.rng
        turns = max(1, min(int(rng.lognormvariate(1.0, 0.6)), run.max_turns + 1))
        for _ in range(turns):
            run.record_turn()  # May raise TurnLimitExceeded → recorded as status="incomplete".
            await asyncio.sleep(rng.uniform(0.2, 3.0) * opts.time_scale)
            run.record_tokens(
                input=int(rng.lognormvariate(6.5, 0.8)), output=int(rng.lognormvariate(5.0, 0.7))
            )
        if fanout and run.depth < 3:
            children = [
                self._subagent(rng.choice(AGENT_NAMES), fanout - 1) for _ in range(rng.randint(0, fanout))
            ]
            await asyncio.gather(*children)
        roll = rng.random()
        if roll < opts.error_rate * 0.8:
            raise SimulatedError("the model call failed")
        if roll < opts.error_rate * 0.9:
            raise SubagentInputError("the task was malformed")
        if roll < opts.error_rate:
            raise TimeoutError("a tool call timed out")
        run.set_output("result " * rng.randint(10, 400))

    async def run(self) -> DemoStats:
        opts = self.options
        started = time.monotonic()
        next_summary = started + opts.summary_every_seconds
        next_session = started + opts.session_seconds
        pending: set[asyncio.Task[None]] = set()
        launched = 0
        while True:
            now = time.monotonic()
            if opts.duration_seconds is not None and now - started >= opts.duration_seconds:
                break
            if opts.once is not None and launched >= opts.once:
                break
            exhausted = (
                self.exhausted_at is not None and now - self.exhausted_at >= opts.exhausted_pause_seconds
            )
            if now >= next_session or exhausted:
                self.tel.new_session()
                self.exhausted_at = None
                next_session = now + opts.session_seconds
            task = asyncio.create_task(self._subagent(self.rng.choice(AGENT_NAMES), fanout=2))
            pending.add(task)
            task.add_done_callback(pending.discard)
            launched += 1
            if now >= next_summary:
                self._summary()
                next_summary = now + opts.summary_every_seconds
            await asyncio.sleep(self.rng.expovariate(opts.rate_per_second) if opts.once is None else 0)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._summary()
        return self.stats

    def _summary(self) -> None:
        s, usage = self.stats, self.tel.tracker.get_usage()
        print(
            f"started={s.started} completed={s.completed} failed={s.failed} refused={s.refused} "
            f"| session: executions={usage.executions} tokens={usage.total_tokens} "
            f"elapsed={usage.elapsed_seconds:.0f}s",
            file=self.options.out,
            flush=True,
        )


def run_demo(tel: SubagentTelemetry, options: DemoOptions) -> DemoStats:
    return asyncio.run(Demo(tel, options).run())

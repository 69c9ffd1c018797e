"""Cost benchmarks: what pricing adds to recording a model response.

A response recorded with a model is priced at the edge: a cached lookup of the model's compiled rates,
a handful of integer multiplications, and the nano-units charged in the same store call as its tokens.
The reference is the same ``record_response`` without a model, measured interleaved in this run;
``genai_prices.calc_price()`` (what pricing per response would cost without the compiled rates) is
reported beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import genai_prices
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # As benchmarks.bench_cost from run.py.

from benchmarks.bench_core import Figure, bench_config, interleaved_medians
from subagent_telemetry import Config, SubagentTelemetry
from subagent_telemetry.quota._prices import PriceBook

AREA = "cost"
INPUT_TOKENS, OUTPUT_TOKENS, CACHE_READ = 1200, 300, 400
MODEL, PROVIDER = "gpt-4o", "openai"
#: Far above what the benchmark spends ($0.0045 a response): the budget check runs, never refuses.
BUDGET = 1_000_000


def _telemetry() -> SubagentTelemetry:
    base = bench_config()
    data = base.model_dump()
    data["agent"]["subagent"]["max_total_cost"] = BUDGET
    return SubagentTelemetry(Config.model_validate(data), registry=CollectorRegistry())


def bench_response(ops: int = 50_000, repeats: int = 9) -> list[Figure]:
    """record_response with and without a model, in one running execution each (turn limit lifted)."""
    tel = _telemetry()
    plain, priced = tel.execution("plain"), tel.execution("priced")
    plain.__enter__()
    priced.__enter__()
    plain.max_turns = priced.max_turns = 10**15
    priced.record_response(1, 1, model=MODEL, provider=PROVIDER)  # Resolve the prices before timing.

    def without_model() -> None:
        plain.record_response(INPUT_TOKENS, OUTPUT_TOKENS)

    def with_model() -> None:
        priced.record_response(INPUT_TOKENS, OUTPUT_TOKENS, model=MODEL, provider=PROVIDER)

    def with_cache() -> None:
        priced.record_response(
            INPUT_TOKENS, OUTPUT_TOKENS, model=MODEL, provider=PROVIDER, cache_read=CACHE_READ
        )

    ns = interleaved_medians(
        {"plain": without_model, "priced": with_model, "cached": with_cache}, ops, repeats
    )
    plain.__exit__(None, None, None)
    priced.__exit__(None, None, None)
    tel.shutdown()
    ratio = ns["priced"] / ns["plain"]
    ratio_cached = ns["cached"] / ns["plain"]
    return [
        Figure("record_response without a model", ns["plain"] / 1000, "µs"),
        Figure("record_response with a priced model", ns["priced"] / 1000, "µs"),
        Figure("record_response with a model and cache_read", ns["cached"] / 1000, "µs"),
        Figure("pricing: ratio vs without a model", ratio, "x", "≤ 1.2", ratio <= 1.2),
        Figure(
            "pricing with cache parts: ratio vs without a model",
            ratio_cached,
            "x",
            "≤ 1.2",
            ratio_cached <= 1.2,
        ),
    ]


def bench_calc_price(ops: int = 2_000, repeats: int = 5) -> list[Figure]:
    """One genai_prices.calc_price() call against the compiled rates' lookup + cost."""
    usage = genai_prices.Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
    book = PriceBook()
    book.rates(MODEL, PROVIDER)

    def calc() -> None:
        genai_prices.calc_price(usage, MODEL, provider_id=PROVIDER)

    def compiled() -> None:
        rates = book.rates(MODEL, PROVIDER)
        assert rates is not None
        rates.cost_atto(INPUT_TOKENS, OUTPUT_TOKENS, 0, 0, 0)

    ns = interleaved_medians({"calc": calc, "compiled": compiled}, ops, repeats)
    return [
        Figure("genai_prices.calc_price() per call", ns["calc"] / 1000, "µs"),
        Figure("compiled rates: lookup + cost per call", ns["compiled"] / 1000, "µs"),
        Figure("calc_price() / compiled rates", ns["calc"] / ns["compiled"], "x"),
    ]


def run(quick: bool = False) -> dict[str, Any]:
    figures: list[Figure] = []
    print("cost: record_response with and without a model ...", file=sys.stderr)
    figures += bench_response(ops=2_000, repeats=3) if quick else bench_response()
    print("cost: calc_price vs compiled rates ...", file=sys.stderr)
    figures += bench_calc_price(ops=50, repeats=3) if quick else bench_calc_price()
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": {"model": MODEL}}

"""The cost benchmark runs quickly and compares like with like."""

from __future__ import annotations

import math

from benchmarks import bench_cost


class TestCostBenchmark:
    def test_quick_run_reports_finite_figures_and_both_ratio_targets(self) -> None:
        """A quick run reports every figure as a finite number, the two pricing ratios with targets."""
        report = bench_cost.run(quick=True)
        figures = {f["name"]: f for f in report["figures"]}
        assert all(math.isfinite(f["value"]) and f["value"] > 0 for f in figures.values())
        assert figures["pricing: ratio vs without a model"]["target"] == "≤ 1.2"
        assert figures["pricing with cache parts: ratio vs without a model"]["target"] == "≤ 1.2"

    def test_both_sides_record_the_same_tokens(self) -> None:
        """The priced and the plain executions record the same tokens; only the priced one has cost."""
        tel = bench_cost._telemetry()
        with tel.execution("plain") as plain, tel.execution("priced") as priced:
            plain.record_response(bench_cost.INPUT_TOKENS, bench_cost.OUTPUT_TOKENS)
            priced.record_response(
                bench_cost.INPUT_TOKENS,
                bench_cost.OUTPUT_TOKENS,
                model=bench_cost.MODEL,
                provider=bench_cost.PROVIDER,
            )
        assert plain.tokens == priced.tokens
        assert (plain.cost_nanos, priced.cost_nanos > 0) == (0, True)
        tel.shutdown()

"""Prices: resolved once per model, computed locally, equal to genai-prices' own calc_price()."""

from __future__ import annotations

import logging
import socket
import warnings
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices.data import providers
from hypothesis import given, settings
from hypothesis import strategies as st

from subagent_telemetry._config import ModelPriceConfig
from subagent_telemetry.quota._prices import (
    ATTO,
    ModelRates,
    PriceBook,
    atto_to_decimal,
    compile_rates,
    to_atto,
)
from tests.conftest import FakeClock

#: (model, provider) pairs of the mainstream providers: flat, cached, tiered and reasoning prices.
MODELS = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("o3", "openai"),
    ("gpt-5", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-3-5-haiku-latest", "anthropic"),
    ("claude-opus-4-1", "anthropic"),
    ("gemini-2.5-pro", "google"),
    ("gemini-2.5-flash", "google"),
    ("deepseek-chat", "deepseek"),
    ("mistral-large-latest", "mistral"),
    ("grok-4", "x-ai"),
]
#: (input, output, cache_read, cache_write, reasoning): cache parts inside input, reasoning inside output.
USAGES = [
    (0, 0, 0, 0, 0),
    (1, 1, 0, 0, 0),
    (1_000, 200, 0, 0, 0),
    (1_000, 200, 300, 100, 50),
    (1_000, 200, 1_000, 0, 200),
    (199_999, 5, 0, 0, 0),
    (200_000, 5, 0, 0, 0),
    (200_001, 5, 100_000, 50_000, 0),
    (1_000_000, 100_000, 0, 999_999, 99_999),
]


def _reference(model: str, provider: str | None, usage: tuple[int, ...]) -> Decimal:
    i, o, cr, cw, rs = usage
    price = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=i,
            output_tokens=o,
            cache_read_tokens=cr,
            cache_write_tokens=cw,
            output_reasoning_tokens=rs,
        ),
        model,
        provider_id=provider,
    )
    return price.total_price


def _cost(book: PriceBook, model: str, provider: str | None, usage: tuple[int, ...]) -> Decimal:
    rates = book.rates(model, provider)
    assert rates is not None
    return atto_to_decimal(rates.cost_atto(*usage))


class TestAgainstGenaiPrices:
    @pytest.mark.parametrize(("model", "provider"), MODELS)
    @pytest.mark.parametrize("usage", USAGES)
    def test_local_cost_equals_calc_price(
        self, model: str, provider: str, usage: tuple[int, int, int, int, int]
    ) -> None:
        """The compiled local figure equals calc_price() exactly, cache reads/writes and tiers included."""
        assert _cost(PriceBook(), model, provider, usage) == _reference(model, provider, usage)

    def test_model_without_provider_resolves_like_calc_price(self) -> None:
        """A bare model name finds its provider the way calc_price() does."""
        usage = (5_000, 700, 1_000, 0, 0)
        assert _cost(PriceBook(), "claude-sonnet-4-5", None, usage) == _reference(
            "claude-sonnet-4-5", None, usage
        )

    def test_whole_bundled_data_within_one_atto_per_token(self) -> None:
        """Every model of the bundled data agrees with calc_price() to 1e-18 per token (float-born
        prices with more decimals are the only difference), wherever calc_price() accepts the usage."""
        book = PriceBook()
        usage = (250_000, 1_000, 100_000, 20_000, 300)
        tolerance = Decimal(sum(usage)) / ATTO
        checked = 0
        for provider in providers:
            for model in provider.models:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        reference = _reference(model.id, provider.id, usage)
                except (ValueError, LookupError):
                    continue
                assert abs(_cost(book, model.id, provider.id, usage) - reference) <= tolerance, model.id
                checked += 1
        assert checked > 1000


class TestCompile:
    def test_part_without_its_own_price_costs_its_parent(self) -> None:
        """Cache reads of a model with no cache price are billed at the input price."""
        base, tiers = compile_rates({"input": Decimal(2), "output": Decimal(8)})
        rates = ModelRates("m", None, "config", base, tiers)
        assert rates.cost_atto(1_000, 0, 400, 0, 0) == to_atto("0.002")

    def test_cached_tokens_are_part_of_input(self) -> None:
        """400 of 1000 input tokens read from cache: 600 at the input price, 400 at the cache price."""
        base, tiers = compile_rates({"input": Decimal(2), "cache_read": Decimal("0.5")})
        rates = ModelRates("m", None, "config", base, tiers)
        assert atto_to_decimal(rates.cost_atto(1_000, 0, 400, 0, 0)) == Decimal("0.0014")

    def test_tier_applies_above_its_start_to_the_whole_response(self) -> None:
        """Past the threshold every token costs the tier's price; at the threshold, the base price."""
        tiered = genai_prices.types.TieredPrices(Decimal(1), [genai_prices.types.Tier(100, Decimal(2))])
        base, tiers = compile_rates({"input": tiered})
        rates = ModelRates("m", None, "config", base, tiers)
        assert rates.cost_atto(100, 0, 0, 0, 0) == 100 * to_atto(1) // 1_000_000
        assert rates.cost_atto(101, 0, 0, 0, 0) == 101 * to_atto(2) // 1_000_000

    def test_per_response_price_is_charged_once_per_response(self) -> None:
        """A request fee is added to every response whatever its tokens."""
        base, tiers = compile_rates({"per_response": Decimal("0.001")})
        assert ModelRates("m", None, "config", base, tiers).cost_atto(0, 0, 0, 0, 0) == to_atto("0.001")


class TestPriceBook:
    def test_override_wins_over_bundled_data(self) -> None:
        """A configured price replaces the bundled one for that model (case-insensitive name)."""
        book = PriceBook({"GPT-4o": ModelPriceConfig(input=Decimal(1), output=Decimal(1))})
        assert _cost(book, "gpt-4o", "openai", (1_000_000, 1_000_000, 0, 0, 0)) == Decimal(2)
        assert book.rates("gpt-4o", "openai").source == "config"  # type: ignore[union-attr]

    def test_override_prices_a_self_hosted_model(self) -> None:
        """A model unknown to the bundled data is priced by its override."""
        book = PriceBook({"my-llama": ModelPriceConfig(input=Decimal("0.1"), output=Decimal("0.4"))})
        assert _cost(book, "my-llama", None, (1_000, 1_000, 0, 0, 0)) == Decimal("0.0005")

    def test_unknown_model_is_unpriced_and_reported_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """An unknown model has no rates, one warning and one on_unpriced call, however often asked."""
        seen: list[tuple[str, str | None]] = []
        book = PriceBook(on_unpriced=lambda model, provider: seen.append((model, provider)))
        with caplog.at_level(logging.WARNING, "subagent_telemetry"):
            for _ in range(3):
                assert book.rates("no-such-model-xyz") is None
        assert seen == [("no-such-model-xyz", None)]
        assert sum("no-such-model-xyz" in r.getMessage() for r in caplog.records) == 1

    def test_a_stream_of_distinct_model_names_keeps_memory_and_logs_bounded(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Past max_models distinct names nothing more is cached or warned per name; prices stay right."""
        seen: list[tuple[str, str | None]] = []
        book = PriceBook(max_models=10, on_unpriced=lambda model, provider: seen.append((model, provider)))
        with caplog.at_level(logging.WARNING, "subagent_telemetry"):
            for n in range(200):
                assert book.rates(f"made-up-model-{n}") is None
            priced = book.rates("gpt-4o-mini", "openai")
        assert len(book._cache) == 10
        assert len(seen) == 10
        assert len(caplog.records) == 11  # ten names, then one line saying the rest are not logged
        assert priced is not None
        assert priced.base == PriceBook().rates("gpt-4o-mini", "openai").base  # type: ignore[union-attr]

    def test_bundled_prices_can_be_switched_off(self) -> None:
        """bundled=False prices only the overrides (a currency other than USD)."""
        assert PriceBook(bundled=False).rates("gpt-4o", "openai") is None

    def test_rates_are_resolved_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """calc_price() runs at the first response of a model only."""
        book = PriceBook()
        book.rates("gpt-4o", "openai")
        calls: list[Any] = []
        monkeypatch.setattr(genai_prices, "calc_price", lambda *a, **k: calls.append(a))
        for _ in range(100):
            book.rates("gpt-4o", "openai")
        assert calls == []

    def test_time_conditional_prices_are_resolved_again_after_a_minute(self) -> None:
        """A model whose price depends on the time of day is looked up again once its entry expires."""
        conditional = next((p.id, m.id) for p in providers for m in p.models if isinstance(m.prices, list))
        clock = FakeClock()
        book = PriceBook(clock=clock)
        first = book.rates(conditional[1], conditional[0])
        assert first is not None
        assert first.expires == clock.now + 60
        clock.advance(61)
        assert book.rates(conditional[1], conditional[0]).expires == clock.now + 60  # type: ignore[union-attr]

    def test_resolving_prices_opens_no_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Prices come from the bundled data: no socket is opened (offline, no update at run time)."""

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("network access")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)
        assert PriceBook().rates("gpt-4o-mini", "openai") is not None


class TestProperty:
    @settings(max_examples=300, deadline=None)
    @given(
        model=st.sampled_from(MODELS),
        input=st.integers(0, 2_000_000),
        output=st.integers(0, 200_000),
        data=st.data(),
    )
    def test_any_usage_costs_what_calc_price_says(
        self, model: tuple[str, str], input: int, output: int, data: st.DataObject
    ) -> None:
        """For any split of input into cache reads/writes and of output into reasoning, the compiled
        figure equals calc_price() exactly (tier thresholds included)."""
        cache_read = data.draw(st.integers(0, input))
        cache_write = data.draw(st.integers(0, input - cache_read))
        reasoning = data.draw(st.integers(0, output))
        usage = (input, output, cache_read, cache_write, reasoning)
        assert _cost(_BOOK, *model, usage) == _reference(*model, usage)


_BOOK = PriceBook()

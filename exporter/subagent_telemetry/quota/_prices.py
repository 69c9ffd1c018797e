"""Prices: each model's prices resolved once, each response's cost computed locally and exactly.

``genai_prices.calc_price()`` costs ~180 µs a call, some 40 times a whole instrumented execution, so it
is never called per response. A model's prices are resolved once (config overrides first, then the
price data bundled with ``genai-prices``, offline: nothing here fetches anything) and compiled into
integer rates in atto-units (1e-18 of the currency) per token. A response's cost is then a handful of
integer multiplications, exact: no float is ever summed.

Usage follows ``genai-prices``' conventions: ``input`` counts every input token, cached ones included
(``cache_read`` and ``cache_write`` are parts of it), and ``output`` every output token, reasoning
included (``reasoning`` is a part of it). A part the model has no price for is billed as its parent.
Tiered prices switch on the response's input tokens (``input > tier start``, the whole response at the
tier's rate), as ``genai-prices`` does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._config import ModelPriceConfig

_log = logging.getLogger("subagent_telemetry")

#: Atto-units (1e-18 of the currency) per currency unit: the scale of compiled rates and costs.
ATTO = 10**18
#: Nano-units per currency unit: the scale of the stores (exact in Redis and in Lua's doubles to 9 M).
NANO = 10**9
_ATTO_PER_NANO = ATTO // NANO
#: Rates per million tokens → atto-units per token.
_PER_MTOK = Decimal(ATTO) / Decimal(1_000_000)
#: Prices with a time condition (off-peak hours, a start date) are resolved again this often (seconds).
CONDITIONAL_TTL_SECONDS = 60.0
#: The usage parts, in the order of a compiled rate tuple.
PARTS = ("input", "output", "cache_read", "cache_write", "reasoning")


@dataclass(frozen=True, slots=True)
class Rates:
    """Integer atto-units per token for (input, output, cache_read, cache_write, reasoning), each part
    already net of its parent's rate (so a part without a price of its own costs its parent's rate),
    plus a fixed cost per response."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int
    per_response: int = 0


@dataclass(frozen=True, slots=True)
class ModelRates:
    """A model's compiled prices: base rates, and (input-token threshold, rates) tiers ascending."""

    model: str
    provider: str | None
    source: str
    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()
    #: Monotonic time after which the prices must be resolved again (``None``: never).
    expires: float | None = None

    def cost_atto(self, input: int, output: int, cache_read: int, cache_write: int, reasoning: int) -> int:
        """The exact cost of one response in atto-units of the currency."""
        rates = self.base
        if self.tiers:
            for start, tier in reversed(self.tiers):
                if input > start:
                    rates = tier
                    break
        return (
            input * rates.input
            + output * rates.output
            + cache_read * rates.cache_read
            + cache_write * rates.cache_write
            + reasoning * rates.reasoning
            + rates.per_response
        )


def atto_to_decimal(atto: int) -> Decimal:
    """Atto-units as an exact decimal amount of the currency."""
    return Decimal(atto).scaleb(-18)


def to_atto(amount: Decimal | int | str) -> int:
    """A decimal amount of the currency in atto-units (exact for up to 18 decimal places)."""
    return int((Decimal(amount) * ATTO).to_integral_value())


def _per_token(price_mtok: Decimal) -> int:
    return int((price_mtok * _PER_MTOK).to_integral_value())


def compile_rates(prices: Mapping[str, Any]) -> tuple[Rates, tuple[tuple[int, Rates], ...]]:
    """Rates from prices per million tokens by part (``None``/absent = no price of its own), each a
    ``Decimal`` or a tiered price (an object with ``base`` and ``tiers`` of ``start``/``price``), and
    ``per_response`` (currency per response). One rate set per region between tier thresholds."""
    starts = sorted({int(t.start) for v in prices.values() if hasattr(v, "tiers") for t in v.tiers})

    def at(part: str, tokens: int | None) -> Decimal | None:
        value = prices.get(part)
        if value is None or not hasattr(value, "tiers"):
            return value
        applicable: Decimal = value.base
        if tokens is not None:
            for tier in sorted(value.tiers, key=lambda t: t.start, reverse=True):
                if tokens > tier.start:
                    applicable = tier.price
                    break
        return applicable

    def rates(tokens: int | None) -> Rates:
        input_price = at("input", tokens) or Decimal(0)
        output_price = at("output", tokens) or Decimal(0)
        own = {part: at(part, tokens) for part in ("cache_read", "cache_write", "reasoning")}
        per_response = prices.get("per_response")
        return Rates(
            input=_per_token(input_price),
            output=_per_token(output_price),
            cache_read=_net(own["cache_read"], input_price),
            cache_write=_net(own["cache_write"], input_price),
            reasoning=_net(own["reasoning"], output_price),
            per_response=to_atto(per_response) if per_response is not None else 0,
        )

    # Just above a threshold (input > start) the tier applies: evaluate each region at start + 1.
    return rates(None), tuple((start, rates(start + 1)) for start in starts)


def _net(own: Decimal | None, parent: Decimal) -> int:
    """A part's rate on top of its parent's (the part's tokens are already counted in the parent)."""
    return 0 if own is None else _per_token(own) - _per_token(parent)


# --------------------------------------------------------------------------------------------------
# Resolution: config overrides, then genai-prices' bundled data.

#: genai-prices price keys → our parts (per million tokens), and the per-1000-requests key.
_GENAI_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "reasoning": "output_reasoning_mtok",
}


def _genai_prices(model: str, provider: str | None) -> tuple[dict[str, Any], str, str, bool] | None:
    """(prices by part, model id, provider id, time-conditional) from the bundled data; None: unknown."""
    try:
        import genai_prices  # noqa: PLC0415 - ~1 s to import its data: only when a model is first priced
    except ImportError:
        _log.warning(
            "subagent_telemetry: genai-prices is not installed (pip install 'subagent-telemetry[cost]'): "
            "only the models under cost.prices are priced"
        )
        return None
    try:
        calc = genai_prices.calc_price(genai_prices.Usage(), model, provider_id=provider)
    except LookupError:
        return None
    model_price = calc.model_price
    prices: dict[str, Any] = {part: getattr(model_price, key, None) for part, key in _GENAI_KEYS.items()}
    requests = getattr(model_price, "requests_kcount", None)
    if requests is not None:
        prices["per_response"] = requests / 1000
    conditional = not isinstance(calc.model.prices, type(model_price))
    return prices, calc.model.id, calc.provider.id, conditional


#: Distinct (model, provider) pairs one process caches prices for (docs/cost.md).
MAX_CACHED_MODELS = 1024


class PriceBook:
    """Resolves a model's prices once and caches them; thread-safe, lock-free on a hit.

    ``overrides`` (``cost.prices`` of the config) win over the bundled data. A model found nowhere is
    unpriced: ``rates()`` returns ``None`` and ``on_unpriced`` is called once per (model, provider).
    At most ``max_models`` pairs are cached (and warned about); later ones are looked up on each use.
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPriceConfig] | None = None,
        *,
        bundled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_unpriced: Callable[[str, str | None], None] | None = None,
        max_models: int = MAX_CACHED_MODELS,
    ) -> None:
        self._overrides = {name.lower(): price for name, price in (overrides or {}).items()}
        self._bundled = bundled
        self._clock = clock
        self._on_unpriced = on_unpriced
        self._cache: dict[tuple[str, str | None], ModelRates | None] = {}
        self._max_models = max_models
        self._overflowed = False
        self._lock = threading.Lock()

    def rates(self, model: str, provider: str | None = None) -> ModelRates | None:
        """The model's compiled prices, resolved on first use; ``None`` when it has no price."""
        key = (model, provider)
        try:
            found = self._cache[key]
        except KeyError:
            return self._resolve(key)
        if found is not None and found.expires is not None and self._clock() >= found.expires:
            return self._resolve(key)
        return found

    def _resolve(self, key: tuple[str, str | None]) -> ModelRates | None:
        model, provider = key
        with self._lock:
            first = key not in self._cache
            found = self._lookup(model, provider)
            if not first or len(self._cache) < self._max_models:
                self._cache[key] = found
            else:  # A stream of distinct names (made up, or one per request): bounded memory and logs.
                if not self._overflowed:
                    self._overflowed = True
                    _log.warning(
                        "subagent_telemetry: more than %d distinct models priced; later ones are looked "
                        "up on every use and their missing prices are no longer logged one by one",
                        self._max_models,
                    )
                return found
        if found is None and first:
            _log.warning(
                "subagent_telemetry: no price for model %r (provider %r): its usage is counted as "
                "unpriced; add it under cost.prices to price it",
                model,
                provider,
            )
            if self._on_unpriced is not None:
                self._on_unpriced(model, provider)
        return found

    def _lookup(self, model: str, provider: str | None) -> ModelRates | None:
        override = self._overrides.get(model.lower())
        if override is not None:
            base, tiers = compile_rates(override.as_prices())
            return ModelRates(model, provider, "config", base, tiers)
        if not self._bundled:
            return None
        bundled = _genai_prices(model, provider)
        if bundled is None:
            return None
        prices, _, provider_id, conditional = bundled
        base, tiers = compile_rates(prices)
        expires = self._clock() + CONDITIONAL_TTL_SECONDS if conditional else None
        return ModelRates(model, provider_id, "genai-prices", base, tiers, expires)

"""Cost estimates for API captioning: USD per million tokens, per model.

The built-in figures are public list prices copied by hand as of `PRICES_AS_OF`. They are estimates for
planning a run, not a bill: batch-API and cached-input discounts and later price changes are not modelled.
Users override or add models through `OpenAISettings.prices` (filled from a JSON file by `--prices-file`),
which is frozen into the run config so a run's figures can be recomputed. A model with no known price has
cost `None`, meaning unknown, never 0, so no report claims a run was free.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidcap.errors import UserError

PRICES_AS_OF = "2025-08-07"

#: model -> (input, output) USD per 1M tokens, OpenAI list prices as of PRICES_AS_OF (estimates)
BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "chatgpt-4o-latest": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4-vision-preview": (10.00, 30.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
}

PRICE_FIELDS = ("input_usd_per_1m", "output_usd_per_1m")

# a dated snapshot ("gpt-4o-2024-08-06") costs what its family costs unless listed itself
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Price:
    input_usd_per_1m: float
    output_usd_per_1m: float
    source: str

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_usd_per_1m + completion_tokens * self.output_usd_per_1m) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"input_usd_per_1m": self.input_usd_per_1m, "output_usd_per_1m": self.output_usd_per_1m,
                "source": self.source}


def validate_prices(data: Any, origin: str = "prices") -> dict[str, dict[str, float]]:
    """Check a user price table `{model: {"input_usd_per_1m": x, "output_usd_per_1m": y}}`; UserError if bad."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: expected a JSON object mapping model names to prices")
    table: dict[str, dict[str, float]] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict) or set(entry) != set(PRICE_FIELDS):
            raise UserError(f"{origin}: model {model!r} needs exactly the fields {', '.join(PRICE_FIELDS)} "
                            "(USD per 1M tokens)")
        values = {}
        for name in PRICE_FIELDS:
            value = entry[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise UserError(f"{origin}: model {model!r} field {name} must be a number >= 0, got {value!r}")
            values[name] = float(value)
        table[str(model)] = values
    return table


def load_prices(path: str | Path) -> dict[str, dict[str, float]]:
    """Read and check a JSON price table, for `OpenAISettings.prices`."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read prices file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"prices file {path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return validate_prices(data, origin=f"prices file {path}")


def price_for(model: str, overrides: dict[str, Any] | None = None) -> Price | None:
    """The price of `model`: user table first, then the built-in one; exact name, then its snapshot family."""
    user = validate_prices(overrides or {})
    names = [model]
    family = _SNAPSHOT_SUFFIX.sub("", model)
    if family != model:
        names.append(family)
    for name in names:
        if name in user:
            return Price(source="user", **user[name])
        if name in BUILTIN_PRICES:
            inp, out = BUILTIN_PRICES[name]
            return Price(inp, out, source=f"built-in list price as of {PRICES_AS_OF} (estimate)")
    return None

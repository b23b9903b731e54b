"""Prices with and without VAT, and a basket of items."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_VAT_RATE = 0.2


def net_price(gross: float, vat_rate: float = DEFAULT_VAT_RATE, *, rounding: int = 2) -> float:
    """The price without VAT."""
    return round(gross / (1 + vat_rate), rounding)


@dataclass
class Basket:
    """Items and their quantities at a unit price."""

    currency: str = "EUR"
    lines: list[tuple[str, int, float]] = field(default_factory=list)

    def add(self, item: str, quantity: int = 1, *, unit_price: float) -> Basket:
        self.lines.append((item, quantity, unit_price))
        return self

    def total(self, *, with_vat: bool = True) -> float:
        gross = sum(quantity * price for _, quantity, price in self.lines)
        return gross if with_vat else net_price(gross)

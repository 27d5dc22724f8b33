"""Body mass index and its WHO category, rounded as people round."""

from __future__ import annotations

import decimal


def round_half_up(value: float, decimals: int) -> float:
    """Rounding as people do it (72.345 → 72.35), not binary floating point's 72.34."""
    quantum = decimal.Decimal(1).scaleb(-decimals)
    return float(decimal.Decimal(repr(value)).quantize(quantum, rounding=decimal.ROUND_HALF_UP))


def bmi(height_cm: int, weight_kg: float) -> float:
    return round_half_up(weight_kg / (height_cm / 100) ** 2, 1)


def bmi_category(bmi_value: float) -> str:
    """The WHO class of the BMI as shown (rounded), so 24.97 shows as 25.0, `overweight`."""
    if bmi_value < 18.5:
        return "underweight"
    if bmi_value < 25:
        return "normal"
    return "overweight" if bmi_value < 30 else "obese"

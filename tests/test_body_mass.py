"""Body mass index and its category."""

import pytest

from planher.body_mass import bmi, bmi_category, round_half_up


@pytest.mark.parametrize(
    "height, weight, value, category",
    [
        (165, 50.2, 18.4, "underweight"),
        (165, 60, 22.0, "normal"),
        (180, 90, 27.8, "overweight"),
        (160, 90, 35.2, "obese"),
    ],
)
def test_bmi_and_its_who_class(height, weight, value, category):
    assert bmi(height, weight) == value
    assert bmi_category(value) == category


def test_weights_round_half_up_to_two_decimals():
    assert round_half_up(72.345, 2) == 72.35
    assert round_half_up(18.475, 1) == 18.5

"""The rules a period must keep."""

from conftest import D, days
from planher.cycles.rules import period_problems


def test_period_problems_name_each_broken_rule():
    today = D
    assert period_problems(D - days(3), D, today) == []
    assert period_problems(D, None, today) == []
    assert [f for f, _ in period_problems(D + days(1), None, today)] == ["start_date"]
    assert [f for f, _ in period_problems(D, D - days(1), today)] == ["end_date"]
    assert [f for f, _ in period_problems(D - days(20), D - days(5), today)] == ["end_date"]
    assert period_problems(D - days(20), D - days(6), today) == []

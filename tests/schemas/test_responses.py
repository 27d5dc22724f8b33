"""Response models that say something in words."""

from planher.schemas.responses import not_shipped_reason


def test_a_model_not_shipped_is_explained_in_her_words_and_a_shipped_one_not_at_all():
    assert not_shipped_reason(True, 0.7, 0.4, 0.6) is None
    reason = not_shipped_reason(False, 0.62, 0.65, 0.6)
    assert "62%" in reason and "65%" in reason and "most common level" in reason
    reason = not_shipped_reason(False, 0.62, 0.4, 0.63)
    assert "62%" in reason and "63%" in reason and "use now" in reason

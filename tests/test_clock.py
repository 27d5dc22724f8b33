"""Timestamps as the contract writes them."""

import datetime as dt

from planher.clock import format_timestamp, utc_now


def test_timestamps_are_iso_8601_utc_with_z():
    assert format_timestamp(dt.datetime(2026, 11, 24, 9, 5, 7)) == "2026-11-24T09:05:07Z"
    assert format_timestamp(None) is None
    assert (
        format_timestamp(dt.datetime(2026, 1, 2, 3, 4, 5, 678901)) == "2026-01-02T03:04:05Z"
    )
    assert utc_now().tzinfo is None  # stored naive, always UTC

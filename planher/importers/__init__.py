"""Other trackers' files as her history (pure: a file in, a history out)."""

"""The cycle calculator: lengths, ovulation, phases and predictions (pure: no I/O)."""

"""SimSID options measured not to help, kept reproducible beside their results (a research subclass)."""

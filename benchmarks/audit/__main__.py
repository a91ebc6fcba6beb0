"""``python -m benchmarks.audit``: audit a suite's ``scores.csv`` against its dataset root(s)."""

import sys

from benchmarks.audit import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.suite``: see the package docstring."""

from benchmarks.suite.cli import main

raise SystemExit(main())

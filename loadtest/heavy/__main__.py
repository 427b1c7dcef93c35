"""`python -m loadtest.heavy`: the heavy models' benchmark (loadtest/heavy/bench.py)."""

from loadtest.heavy.bench import main

raise SystemExit(main())

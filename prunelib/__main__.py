"""Entry point of ``python -m prunelib``."""

from prunelib.cli import main

raise SystemExit(main())

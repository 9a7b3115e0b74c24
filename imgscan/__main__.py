"""`python -m imgscan` runs the command-line interface."""

from __future__ import annotations

from imgscan.cli import main

raise SystemExit(main())

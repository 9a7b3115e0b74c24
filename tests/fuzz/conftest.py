"""Hypothesis profiles of the fuzz harness: `ci` (the default: short and bounded, run by
`./dev.sh test`) and `long` (IMGSCAN_FUZZ_PROFILE=long, for a fuzzing session by hand).

No example database is kept in the repository: the corpus (corpus/<target>/) is the memory of
the harness, and every input that ever found a bug is added to it by hand.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis.configuration import set_hypothesis_home_dir

from .fuzzing import PROFILE, SEED

# Hypothesis keeps caches (not examples: there is no database) in .hypothesis/ under the
# working directory; .pytest_cache/ is already ignored by git.
set_hypothesis_home_dir(Path(__file__).resolve().parents[2] / ".pytest_cache" / "hypothesis")

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=timedelta(seconds=5),  # far above any example's cost: a hang, not noise
    database=None,
    print_blob=True,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    parent=settings.get_profile("ci"),
    max_examples=5000,
    deadline=timedelta(seconds=20),
    verbosity=Verbosity.normal,
)
if PROFILE not in ("ci", "long"):
    raise pytest.UsageError(f"IMGSCAN_FUZZ_PROFILE={PROFILE!r}: choose ci or long")
settings.load_profile(PROFILE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(
        f"imgscan fuzz: profile {PROFILE}, seed {SEED} "
        f"(IMGSCAN_FUZZ_PROFILE={PROFILE} IMGSCAN_FUZZ_SEED={SEED} replays this run)"
    )

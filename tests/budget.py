"""How many generated examples a hypothesis test draws.

Every example draws new shapes, and new shapes mean new compilations, so the
examples are most of these tests' time. ``make test`` draws half of each
test's count; ``make test-all`` (what CI runs) sets ``JAXNETS_TEST_EXAMPLES=full``
for its first pass and draws them all. The examples are derandomized: each
count draws the same examples on every run and machine.
"""

import os


def examples(full: int) -> int:
    """``full`` under ``JAXNETS_TEST_EXAMPLES=full``, else half of it (at least 2)."""
    setting = os.environ.get("JAXNETS_TEST_EXAMPLES", "half")
    if setting not in ("half", "full"):
        raise ValueError(f"JAXNETS_TEST_EXAMPLES must be 'half' or 'full'; got {setting!r}")
    return full if setting == "full" else max(2, full // 2)

"""The inspection classes the platform knows unless a line names its own: the pass class and the
defect taxonomy of a label line. One list, used by the models, the challenge sets and the
synthesis (the simulator keeps its own: production code never learns how it draws)."""

from __future__ import annotations

from typing import Final

GOOD_CLASS: Final = "good"
"""The pass class; every other class is a defect (a reject)."""

DEFECT_CLASSES: Final[tuple[str, ...]] = (
    "ink_smudge",
    "missing_print",
    "misregistration",
    "wrong_text",
    "torn_label",
    "contamination",
    "skewed_label",
    "damaged_code",
)

INSPECTION_CLASSES: Final[tuple[str, ...]] = (GOOD_CLASS, *DEFECT_CLASSES)
"""``good`` first (class index 0 of every model), then the defect classes."""

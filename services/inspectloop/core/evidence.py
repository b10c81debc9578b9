"""How much a count of detected defects proves: the one-sided Clopper-Pearson lower bound of a
recall. The trainer bounds each class's recall on a version's real acceptance images; the
monitor keeps a line guarded until operator-confirmed production units raise the bound of every
class over the bar (see :mod:`inspectloop.trainer.acceptance`)."""

from __future__ import annotations

from scipy.stats import beta


def recall_lower_bound(detected: float, examples: float, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound of a recall of ``detected`` out of ``examples``
    (0 without examples or detections). Non-integer counts (weighted escapes) are allowed."""
    if examples <= 0 or detected <= 0:
        return 0.0
    detected = min(detected, examples)
    return float(beta.ppf(1 - confidence, detected, examples - detected + 1))

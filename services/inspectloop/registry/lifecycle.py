"""The model lifecycle as the registry enforces it: stages, allowed transitions, signatures.

``candidate → validated | rejected``, ``validated → shadow → canary → production → archived``,
and from shadow, canary or production ``→ rolled_back`` (DESIGN.md, Model lifecycle). Three edges
are added so that every version can leave the active stages without pretending it was deployed:

* ``validated → rejected``: a quality reviewer rejects a version that passed the automatic gates;
* ``validated → archived``: a validated version that will never be rolled out is retired;
* ``rolled_back → archived``: a rolled-back version is retired for good.

``rejected`` and ``archived`` are final. The registry never moves a version by itself: promoting
a new production version does not archive the previous one (several production versions may
serve different lines); the rollout controller asks for that transition explicitly.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ALLOWED_TRANSITIONS",
    "INITIAL_STAGES",
    "SIGNABLE_STAGES",
    "TERMINAL_STAGES",
    "SignatureMeaning",
    "Stage",
    "meaning_for_stage",
    "transition_error",
]


class Stage(StrEnum):
    """Lifecycle stage of a model version (``ModelStage`` in models.proto, lower case)."""

    CANDIDATE = "candidate"
    VALIDATED = "validated"
    REJECTED = "rejected"
    SHADOW = "shadow"
    CANARY = "canary"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    ROLLED_BACK = "rolled_back"

    @property
    def proto_name(self) -> str:
        """The ``ModelStage`` enum value name, e.g. ``MODEL_STAGE_ROLLED_BACK``."""
        return "MODEL_STAGE_" + self.value.upper()

    @classmethod
    def from_proto_name(cls, name: str) -> Stage | None:
        """The stage of a ``ModelStage`` value name; None for UNSPECIFIED or an unknown name."""
        prefix = "MODEL_STAGE_"
        if not name.startswith(prefix):
            return None
        try:
            return cls(name[len(prefix) :].lower())
        except ValueError:
            return None


#: Stages a version may be registered in: the trainer decides between them with its gates.
INITIAL_STAGES: Final = frozenset({Stage.CANDIDATE, Stage.VALIDATED, Stage.REJECTED})

ALLOWED_TRANSITIONS: Final[dict[Stage, tuple[Stage, ...]]] = {
    Stage.CANDIDATE: (Stage.VALIDATED, Stage.REJECTED),
    Stage.VALIDATED: (Stage.SHADOW, Stage.REJECTED, Stage.ARCHIVED),
    Stage.SHADOW: (Stage.CANARY, Stage.ROLLED_BACK),
    Stage.CANARY: (Stage.PRODUCTION, Stage.ROLLED_BACK),
    Stage.PRODUCTION: (Stage.ARCHIVED, Stage.ROLLED_BACK),
    Stage.ROLLED_BACK: (Stage.ARCHIVED,),
    Stage.REJECTED: (),
    Stage.ARCHIVED: (),
}

TERMINAL_STAGES: Final = frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if not targets)


class SignatureMeaning(StrEnum):
    """What an electronic signature means (21 CFR 11.50(a)(3)): shown with every signature."""

    APPROVE_SHADOW = "approve-shadow"
    APPROVE_CANARY = "approve-canary"
    APPROVE_PRODUCTION = "approve-production"
    REVIEWED = "reviewed"


#: Stages whose entry a plant can make conditional on a signature (``require_signature_for``).
SIGNABLE_STAGES: Final = {
    Stage.SHADOW: SignatureMeaning.APPROVE_SHADOW,
    Stage.CANARY: SignatureMeaning.APPROVE_CANARY,
    Stage.PRODUCTION: SignatureMeaning.APPROVE_PRODUCTION,
}


def meaning_for_stage(stage: Stage) -> SignatureMeaning | None:
    """The signature meaning that authorises entering ``stage``; None if none can."""
    return SIGNABLE_STAGES.get(stage)


def transition_error(current: Stage, target: Stage) -> str | None:
    """Why ``current → target`` is not allowed, or None when it is."""
    if current == target:
        return f"the version is already in stage {current.value}"
    allowed = ALLOWED_TRANSITIONS[current]
    if target in allowed:
        return None
    if not allowed:
        return (
            f"invalid stage transition {current.value} → {target.value}: "
            f"{current.value} is a final stage"
        )
    names = ", ".join(s.value for s in allowed)
    return (
        f"invalid stage transition {current.value} → {target.value}: "
        f"from {current.value} a version may move to {names}"
    )

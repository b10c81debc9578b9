"""Images rendered from a new label design's artwork, most with a synthesised defect, for the
snapshot of a retraining.

After a redesign, operators label a few hundred production images of the new design, nearly all
of them good: a plant sees too few defects of a new design to learn them from production alone.
The plant has the new artwork, though, so the trainer renders it (with the simulator's renderer,
which stands in for the artwork pipeline here) under the line's camera conditions, synthesises
every defect class on it, and keeps some renders good so that the new design's good appearance
is not learnt from the operators' few hundred images alone. The result is a dataset in the
reference layout that the snapshot includes like any other, marked ``synthetic:`` in its
manifest.

The output directory is named by a hash of what was asked for, so a redelivered request, or the
next retraining for the same design, reuses it instead of rendering it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.simulator.designs import DESIGNS

log = logging.getLogger(__name__)

SPLITS: tuple[tuple[str, float], ...] = (("train", 0.7), ("val", 0.15), ("test", 0.15))


def synthesise_defects(
    root: Path,
    *,
    design: str,
    skus: Sequence[str],
    n: int,
    seed: int,
    size: int,
    defect_fraction: float = 0.8,
    severity: tuple[float, float] = (0.0, 1.0),
    serialization: str = "gs1-dm",
    workers: int = 1,
) -> Path | None:
    """A dataset of ``n`` images of label design ``design`` under ``root``, ``defect_fraction``
    of them defective (every defect class, spread evenly, severities uniform in ``severity``);
    None when the design's artwork is unknown."""
    if design not in DESIGNS:
        log.warning("no artwork for label design %r: no defects synthesised for it", design)
        return None
    spec = DatasetSpec(
        product="label",
        n=n,
        seed=seed,
        size=size,
        design=design,
        serialization=serialization,  # type: ignore[arg-type]
        skus=tuple(sorted(skus)),
        defect_fraction=defect_fraction,
        severity=severity,
        splits=SPLITS,
        golden_per_class=0,
    )
    key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:16]
    out = root / f"design-{design}-{key}"
    if (out / "manifest.jsonl").exists():
        return out
    staging = root / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    write_dataset(spec, staging, workers=workers)
    staging.rename(out)
    log.info("synthesised %d images of label design %s in %s", n, design, out)
    return out

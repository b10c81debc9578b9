"""Factory simulator: synthetic package-label and surface images, deterministic per seed.

Public API:

- products: ``Sku``, ``build_catalogue``, ``default_catalogue``, ``gs1_check_digit``,
  ``gtin14``, ``SERIALIZATIONS``;
- designs: ``LabelDesign``, ``design_for`` (``A`` current, ``B`` redesign);
- conditions: ``Conditions``, ``ConditionsDistribution`` (``with_lighting_drift``,
  ``with_blur``);
- defects: ``DEFECT_CLASSES``, ``LABEL_CLASSES``;
- rendering: ``render_label``, ``LabelRenderer``; surfaces: ``render_surface``,
  ``SURFACE_PRODUCTS``, ``SURFACE_DEFECTS``;
- datasets: ``DatasetSpec``, ``plan``, ``write_dataset``, ``read_manifest``,
  ``verify_dataset``;
- CLI: ``inspectloop.simulator.cli.simulate_app``.
"""

from __future__ import annotations

from inspectloop.simulator.conditions import Conditions, ConditionsDistribution
from inspectloop.simulator.dataset import (
    DatasetSpec,
    plan,
    read_manifest,
    verify_dataset,
    write_dataset,
)
from inspectloop.simulator.defects import DEFECT_CLASSES, LABEL_CLASSES
from inspectloop.simulator.designs import DESIGNS, LabelDesign, design_for
from inspectloop.simulator.products import (
    SERIALIZATIONS,
    Sku,
    build_catalogue,
    default_catalogue,
    gs1_check_digit,
    gtin14,
)
from inspectloop.simulator.render import GENERATOR_VERSION, LabelRenderer, render_label
from inspectloop.simulator.surfaces import (
    SURFACE_CLASSES,
    SURFACE_DEFECTS,
    SURFACE_PRODUCTS,
    render_surface,
)

__all__ = [
    "DEFECT_CLASSES",
    "DESIGNS",
    "GENERATOR_VERSION",
    "LABEL_CLASSES",
    "SERIALIZATIONS",
    "SURFACE_CLASSES",
    "SURFACE_DEFECTS",
    "SURFACE_PRODUCTS",
    "Conditions",
    "ConditionsDistribution",
    "DatasetSpec",
    "LabelDesign",
    "LabelRenderer",
    "Sku",
    "build_catalogue",
    "default_catalogue",
    "design_for",
    "gs1_check_digit",
    "gtin14",
    "plan",
    "read_manifest",
    "render_label",
    "render_surface",
    "verify_dataset",
    "write_dataset",
]

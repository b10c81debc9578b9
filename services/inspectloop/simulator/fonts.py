"""Typefaces for label text, found offline.

The DejaVu and STIX faces ship inside matplotlib's wheel (``matplotlib/mpl-data/fonts/ttf``);
they are located without importing matplotlib. Where matplotlib is missing, Debian's DejaVu
package is tried, and as a last resort Pillow's built-in scalable face (Aileron), so that the
generator always runs; the same font files give the same pixels, so datasets are only
byte-identical between machines that resolve the same files (``font_source()`` says which).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from functools import cache
from pathlib import Path

from PIL import ImageFont

Font = ImageFont.FreeTypeFont

FACES = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "STIXGeneral",
    "STIXGeneralBol",
)
"""Faces a design may name; any other name raises."""

_SYSTEM_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/stix"))


@cache
def _font_dirs() -> tuple[Path, ...]:
    dirs: list[Path] = []
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "mpl-data" / "fonts" / "ttf"
            if candidate.is_dir():
                dirs.append(candidate)
    dirs.extend(d for d in _SYSTEM_DIRS if d.is_dir())
    return tuple(dirs)


@cache
def font_path(face: str) -> Path | None:
    """The TrueType file for ``face``, or None where no copy exists on this machine."""
    if face not in FACES:
        raise ValueError(f"unknown face {face!r}; choose from {FACES}")
    for directory in _font_dirs():
        candidate = directory / f"{face}.ttf"
        if candidate.is_file():
            return candidate
    return None


@cache
def font_source() -> str:
    """Which font files this machine uses, stably named (for dataset summaries):
    ``matplotlib <version>``, ``system``, or ``pillow-default``."""
    path = font_path("DejaVuSans")
    if path is None:
        return "pillow-default"
    if "mpl-data" in path.parts:
        try:
            return f"matplotlib {importlib.metadata.version('matplotlib')}"
        except importlib.metadata.PackageNotFoundError:
            return "matplotlib"
    return "system"


@cache
def load_font(face: str, size: int) -> Font:
    """``face`` at ``size`` pixels (cached per process)."""
    size = max(int(size), 4)
    path = font_path(face)
    if path is None:
        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
            raise RuntimeError("Pillow has no FreeType support: cannot render label text")
        return font
    return ImageFont.truetype(str(path), size=size)


def fit_font(face: str, text: str, max_width: float, max_height: float) -> Font:
    """The largest size of ``face`` whose rendering of ``text`` fits the box."""
    size = max(int(max_height), 4)
    while size > 4:
        font = load_font(face, size)
        left, top, right, bottom = font.getbbox(text)
        if right - left <= max_width and bottom - top <= max_height:
            return font
        size -= 1
    return load_font(face, 4)

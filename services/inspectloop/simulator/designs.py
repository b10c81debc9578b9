"""Label designs: layout, palette, typeface, logo and field positions.

Every SKU has design ``A`` (the current label) and design ``B`` (the redesign: same information,
new layout, colours, typefaces, logo and field positions), and each design has one layout per
serialization format. Boxes are fractions of the label's width and height, so one design renders
at any resolution.

- ``A``: white stock, a horizontal brand band across the top with the drug name in white bold
  sans capitals and a round cross logo; strength and pack below; fields in a monospace face;
  the DataMatrix bottom right (or, for the linear format, the barcode bottom left with the
  serial under it and lot and expiry in a right-hand column).
- ``B``: cream stock, a vertical brand band on the left carrying a hexagon logo and "Rx only";
  the drug name in a dark serif; the strength in a tinted pill; the code bottom left of the text
  area with the fields beside it (or the barcode under the text with the fields in one row);
  a thin accent stripe along the bottom edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from typing import Literal

from inspectloop.simulator.products import SERIALIZATIONS, Serialization, Sku

DesignName = Literal["A", "B"]
DESIGNS: tuple[DesignName, ...] = ("A", "B")

RGB = tuple[int, int, int]

LABEL_ASPECT = 1.42
"""Label width over height; the same stock for both designs (the carton did not change)."""


@dataclass(frozen=True)
class Box:
    """A rectangle in label fractions: ``x0, y0`` top left, ``x1, y1`` bottom right."""

    x0: float
    y0: float
    x1: float
    y1: float

    def px(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` x ``height`` label."""
        return (
            round(self.x0 * width),
            round(self.y0 * height),
            round(self.x1 * width),
            round(self.y1 * height),
        )


@dataclass(frozen=True)
class Palette:
    """Colours of a design for one SKU."""

    stock: RGB  # the label paper
    band: RGB  # brand colour block
    band_text: RGB  # text and logo printed on the band
    text: RGB  # body text
    field_text: RGB  # the line printer's ink: lot, expiry, serial, code
    accent: RGB  # rules, pills, stripes


@dataclass(frozen=True)
class Typeface:
    """Faces (see ``fonts.FACES``) for the three kinds of text on a label."""

    name: str
    body: str
    fields: str


@dataclass(frozen=True)
class Layout:
    """Where each element of the label goes, for one serialization format."""

    band: Box
    name: Box
    name_on_band: bool
    logo: Box
    strength: Box
    strength_pill: bool
    form: Box
    manufacturer: Box
    rx: Box
    rx_on_band: bool
    rules: tuple[Box, ...]
    lot: Box
    expiry: Box
    serial: Box
    code: Box
    hri: Box | None = None  # human-readable AIs under a linear barcode

    def field_box(self, name: str) -> Box:
        """The box of field ``lot``, ``expiry`` or ``serial``."""
        boxes = {"lot": self.lot, "expiry": self.expiry, "serial": self.serial}
        return boxes[name]


@dataclass(frozen=True)
class TextFormat:
    """How a design spells its text fields."""

    name_upper: bool
    lot: str  # format with {lot}
    expiry: str  # strftime pattern of the expiry month
    serial: str  # format with {serial}
    form: str  # format with {pack_size} and {form}
    rx: str


@dataclass(frozen=True)
class LabelDesign:
    """One label design for one SKU: palette, typeface, logo, text formats and layouts."""

    name: DesignName
    palette: Palette
    typeface: Typeface
    logo: Literal["cross-circle", "hex-leaf"]
    text: TextFormat
    layouts: dict[Serialization, Layout] = field(hash=False, compare=True)

    def layout(self, serialization: Serialization) -> Layout:
        """The layout for ``serialization``."""
        return self.layouts[serialization]

    def lot_text(self, lot: str) -> str:
        """The lot line as printed."""
        return self.text.lot.format(lot=lot)

    def expiry_text(self, sku: Sku) -> str:
        """The expiry line as printed."""
        return sku.expiry.strftime(self.text.expiry)

    def serial_text(self, serial: str) -> str:
        """The serial line as printed."""
        return self.text.serial.format(serial=serial)

    def describe(self) -> dict[str, object]:
        """A short JSON-ready description for metadata."""
        return {
            "name": self.name,
            "typeface": self.typeface.__dict__,
            "logo": self.logo,
            "stock": self.palette.stock,
            "band": self.palette.band,
        }


# Brand colours by catalogue position; the redesign's set shares no hue with the current one.
_A_BANDS: tuple[RGB, ...] = ((22, 74, 158), (178, 34, 52), (20, 118, 74), (102, 50, 140))
_B_BANDS: tuple[RGB, ...] = ((0, 121, 122), (214, 100, 28), (58, 64, 150), (164, 38, 104))


def _tint(colour: RGB, amount: float) -> RGB:
    r, g, b = colour
    return (
        round(r + (255 - r) * amount),
        round(g + (255 - g) * amount),
        round(b + (255 - b) * amount),
    )


def _layouts_a() -> dict[Serialization, Layout]:
    dm = Layout(
        band=Box(0.0, 0.0, 1.0, 0.27),
        name=Box(0.05, 0.05, 0.74, 0.22),
        name_on_band=True,
        logo=Box(0.80, 0.03, 0.95, 0.24),
        strength=Box(0.05, 0.31, 0.46, 0.47),
        strength_pill=False,
        form=Box(0.05, 0.50, 0.62, 0.57),
        manufacturer=Box(0.66, 0.31, 0.96, 0.37),
        rx=Box(0.50, 0.32, 0.62, 0.46),
        rx_on_band=False,
        rules=(Box(0.05, 0.605, 0.60, 0.62),),
        lot=Box(0.05, 0.66, 0.60, 0.74),
        expiry=Box(0.05, 0.76, 0.60, 0.84),
        serial=Box(0.05, 0.86, 0.60, 0.94),
        code=Box(0.67, 0.47, 0.96, 0.93),
    )
    linear = replace(
        dm,
        rules=(Box(0.05, 0.605, 0.96, 0.62),),
        code=Box(0.05, 0.645, 0.62, 0.815),
        hri=Box(0.05, 0.825, 0.62, 0.88),
        serial=Box(0.05, 0.895, 0.62, 0.965),
        lot=Box(0.655, 0.66, 0.97, 0.75),
        expiry=Box(0.655, 0.78, 0.97, 0.87),
    )
    return {"gs1-dm": dm, "gs1-linear": linear}


def _layouts_b() -> dict[Serialization, Layout]:
    dm = Layout(
        band=Box(0.0, 0.0, 0.25, 1.0),
        name=Box(0.30, 0.06, 0.96, 0.24),
        name_on_band=False,
        logo=Box(0.04, 0.07, 0.21, 0.35),
        strength=Box(0.30, 0.28, 0.60, 0.44),
        strength_pill=True,
        form=Box(0.30, 0.47, 0.96, 0.54),
        manufacturer=Box(0.64, 0.31, 0.96, 0.38),
        rx=Box(0.03, 0.84, 0.22, 0.94),
        rx_on_band=True,
        rules=(Box(0.25, 0.955, 1.0, 1.0),),
        code=Box(0.30, 0.58, 0.56, 0.95),
        lot=Box(0.59, 0.60, 0.96, 0.69),
        expiry=Box(0.59, 0.71, 0.96, 0.80),
        serial=Box(0.59, 0.82, 0.96, 0.91),
    )
    linear = replace(
        dm,
        name=Box(0.30, 0.05, 0.96, 0.21),
        strength=Box(0.30, 0.24, 0.56, 0.37),
        manufacturer=Box(0.62, 0.26, 0.96, 0.33),
        form=Box(0.30, 0.40, 0.96, 0.47),
        code=Box(0.30, 0.50, 0.96, 0.67),
        hri=Box(0.30, 0.685, 0.96, 0.745),
        lot=Box(0.30, 0.77, 0.62, 0.855),
        expiry=Box(0.64, 0.77, 0.96, 0.855),
        serial=Box(0.30, 0.865, 0.96, 0.95),
    )
    return {"gs1-dm": dm, "gs1-linear": linear}


def sku_index(sku: Sku) -> int:
    """Position of ``sku`` in its catalogue, from its id (``SKU-03`` -> 2)."""
    try:
        return int(sku.sku_id.rsplit("-", 1)[-1]) - 1
    except ValueError:
        return sum(sku.sku_id.encode()) % len(_A_BANDS)


@cache
def design_for(sku: Sku, name: DesignName) -> LabelDesign:
    """Design ``name`` (``A`` current, ``B`` redesign) of ``sku``."""
    index = sku_index(sku)
    if name == "A":
        band = _A_BANDS[index % len(_A_BANDS)]
        return LabelDesign(
            name="A",
            palette=Palette(
                stock=(247, 247, 244),
                band=band,
                band_text=(255, 255, 255),
                text=(28, 28, 34),
                field_text=(20, 20, 20),
                accent=band,
            ),
            typeface=Typeface(name="DejaVuSans-Bold", body="DejaVuSans", fields="DejaVuSansMono"),
            logo="cross-circle",
            text=TextFormat(
                name_upper=True,
                lot="LOT {lot}",
                expiry="EXP %Y-%m",
                serial="SN {serial}",
                form="{pack_size} {form}",
                rx="Rx",
            ),
            layouts=_layouts_a(),
        )
    if name == "B":
        band = _B_BANDS[index % len(_B_BANDS)]
        return LabelDesign(
            name="B",
            palette=Palette(
                stock=(240, 233, 214),
                band=band,
                band_text=(250, 246, 236),
                text=(40, 30, 60),
                field_text=(44, 36, 30),
                accent=_tint(band, 0.55),
            ),
            typeface=Typeface(name="DejaVuSerif-Bold", body="STIXGeneral", fields="DejaVuSerif"),
            logo="hex-leaf",
            text=TextFormat(
                name_upper=False,
                lot="Lot: {lot}",
                expiry="Exp: %m/%Y",
                serial="S/N: {serial}",
                form="{form} - {pack_size} pcs",
                rx="Rx only",
            ),
            layouts=_layouts_b(),
        )
    raise ValueError(f"unknown design {name!r}; choose from {DESIGNS}")


__all__ = [
    "DESIGNS",
    "LABEL_ASPECT",
    "SERIALIZATIONS",
    "Box",
    "DesignName",
    "LabelDesign",
    "Layout",
    "Palette",
    "TextFormat",
    "Typeface",
    "design_for",
]

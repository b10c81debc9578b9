"""Products on the simulated packaging line: SKUs and their GS1-style serialization.

A SKU carries what a pharmaceutical label must show: drug name, strength, dosage form, a GTIN,
the lot number and the expiry date of the batch being packed. Every unit also carries a serial
number, so that the label's code encodes GS1 element strings ``(01) GTIN``, ``(17) expiry
YYMMDD``, ``(10) lot``, ``(21) serial``.

Two serialization formats exist, as when a regulation changes them:

- ``gs1-dm``: a GS1 DataMatrix-like 2D symbol (an L-shaped finder, a clock track and data
  modules derived from a hash of the element string) with the human-readable fields beside it;
- ``gs1-linear``: a GS1-128-like linear barcode (a Code 128-like symbology: start C, FNC1,
  digit pairs, a modulo-103 check symbol and the stop pattern) with the AIs printed in brackets
  under the bars.

Neither symbol is decodable by a real scanner: they are drawn so that a camera sees the same kind
of structure (module grid, bars) and so that the pattern changes with every serial number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Serialization = Literal["gs1-dm", "gs1-linear"]
SERIALIZATIONS: tuple[Serialization, ...] = ("gs1-dm", "gs1-linear")

DEFAULT_CATALOGUE_SEED = 20240611
"""The catalogue every dataset uses unless told otherwise; dataset seeds never change it."""

SERIAL_DIGITS = 12
DM_MODULES = 18  # data region plus finder and clock track, like an 18x18 ECC 200 symbol

_DRUGS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Amoxicillin", ("250 mg", "500 mg"), "capsules"),
    ("Metformin", ("500 mg", "850 mg"), "film-coated tablets"),
    ("Atorvastatin", ("10 mg", "20 mg", "40 mg"), "film-coated tablets"),
    ("Lisinopril", ("5 mg", "10 mg"), "tablets"),
    ("Omeprazole", ("20 mg", "40 mg"), "gastro-resistant capsules"),
    ("Levothyroxine", ("50 mcg", "100 mcg"), "tablets"),
    ("Amlodipine", ("5 mg", "10 mg"), "tablets"),
    ("Sertraline", ("50 mg", "100 mg"), "film-coated tablets"),
    ("Ibuprofen", ("200 mg", "400 mg"), "film-coated tablets"),
    ("Paracetamol", ("500 mg", "1 g"), "tablets"),
)
_MANUFACTURERS = ("Norvale Pharma", "Helixa Labs", "Castellan Health")
_PACK_SIZES = (14, 28, 30, 56, 100)
_LOT_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def gs1_check_digit(digits: str) -> int:
    """The GS1 modulo-10 check digit for ``digits`` (the data digits, without the check digit).

    Weights 3 and 1 alternate from the rightmost data digit, which gets 3.
    """
    if not digits.isdigit():
        raise ValueError(f"GS1 data must be digits, got {digits!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def gtin14(data13: str) -> str:
    """A GTIN-14 from its first 13 digits: appends the check digit."""
    if len(data13) != 13:
        raise ValueError(f"a GTIN-14 has 13 data digits, got {len(data13)}")
    return data13 + str(gs1_check_digit(data13))


def is_valid_gtin(gtin: str) -> bool:
    """Whether ``gtin`` (8, 12, 13 or 14 digits) ends with its correct check digit."""
    return (
        gtin.isdigit()
        and len(gtin) in (8, 12, 13, 14)
        and gs1_check_digit(gtin[:-1]) == int(gtin[-1])
    )


@dataclass(frozen=True)
class Sku:
    """One product as packed on the line: what its label must show."""

    sku_id: str
    drug_name: str
    strength: str
    dosage_form: str
    pack_size: int
    manufacturer: str
    gtin: str
    lot: str
    expiry: dt.date

    @property
    def expiry_yymmdd(self) -> str:
        """Expiry as GS1 AI (17) wants it."""
        return self.expiry.strftime("%y%m%d")

    def element_string(self, serial: str) -> str:
        """Human-readable GS1 element string: ``(01)...(17)...(10)...(21)...``."""
        return f"(01){self.gtin}(17){self.expiry_yymmdd}(10){self.lot}(21){serial}"

    def payload(self, serial: str) -> str:
        """The encoded data: fixed-length AIs first, variable ones separated by GS (FNC1)."""
        return f"01{self.gtin}17{self.expiry_yymmdd}10{self.lot}\x1d21{serial}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, as written into manifests."""
        data = asdict(self)
        data["expiry"] = self.expiry.isoformat()
        return data


def build_catalogue(seed: int = DEFAULT_CATALOGUE_SEED, n: int = 4) -> tuple[Sku, ...]:
    """A small fixed catalogue of ``n`` SKUs (distinct drugs), generated from ``seed``."""
    if not 1 <= n <= len(_DRUGS):
        raise ValueError(f"a catalogue has 1..{len(_DRUGS)} SKUs, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xCA7,)))
    drugs = rng.choice(len(_DRUGS), size=n, replace=False)
    company_prefix = "0" + "".join(str(d) for d in rng.integers(0, 10, size=7))
    skus = []
    for i, drug_index in enumerate(drugs):
        name, strengths, form = _DRUGS[int(drug_index)]
        item_ref = "".join(str(d) for d in rng.integers(0, 10, size=5))
        letters = "".join(_LOT_LETTERS[int(k)] for k in rng.integers(0, len(_LOT_LETTERS), 2))
        lot_digits = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(5, 7))))
        expiry = dt.date(2026 + int(rng.integers(0, 3)), int(rng.integers(1, 13)), 1)
        expiry = _end_of_month(expiry)
        skus.append(
            Sku(
                sku_id=f"SKU-{i + 1:02d}",
                drug_name=name,
                strength=strengths[int(rng.integers(0, len(strengths)))],
                dosage_form=form,
                pack_size=_PACK_SIZES[int(rng.integers(0, len(_PACK_SIZES)))],
                manufacturer=_MANUFACTURERS[int(rng.integers(0, len(_MANUFACTURERS)))],
                gtin=gtin14(company_prefix + item_ref),
                lot=letters + lot_digits,
                expiry=expiry,
            )
        )
    return tuple(skus)


@cache
def default_catalogue() -> tuple[Sku, ...]:
    """The catalogue used by datasets and the line simulator unless told otherwise."""
    return build_catalogue()


def find_sku(sku_id: str, catalogue: Sequence[Sku] | None = None) -> Sku:
    """The SKU with ``sku_id`` in ``catalogue`` (default: the default catalogue)."""
    for sku in catalogue if catalogue is not None else default_catalogue():
        if sku.sku_id == sku_id:
            return sku
    raise KeyError(f"no SKU {sku_id!r} in the catalogue")


def _end_of_month(day: dt.date) -> dt.date:
    nxt = dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


def sample_serial(rng: np.random.Generator) -> str:
    """A unit serial number, AI (21): ``SERIAL_DIGITS`` digits, not starting with 0."""
    first = str(int(rng.integers(1, 10)))
    return first + "".join(str(d) for d in rng.integers(0, 10, size=SERIAL_DIGITS - 1))


# --- symbols ----------------------------------------------------------------------------------


def _hash_bits(payload: str, count: int) -> npt.NDArray[np.bool_]:
    digest = hashlib.shake_256(payload.encode()).digest((count + 7) // 8)
    return np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[:count].astype(bool)


def datamatrix_modules(payload: str, n: int = DM_MODULES) -> npt.NDArray[np.bool_]:
    """An ``n`` x ``n`` DataMatrix-like module matrix (True = dark) for ``payload``.

    Solid finder along the left column and bottom row, alternating clock track along the top row
    and right column, data modules from a SHAKE-256 hash of the payload in between.
    """
    if n < 8 or n % 2:
        raise ValueError("a DataMatrix-like symbol needs an even size >= 8")
    grid = np.zeros((n, n), dtype=bool)
    grid[1 : n - 1, 1 : n - 1] = _hash_bits(payload, (n - 2) * (n - 2)).reshape(n - 2, n - 2)
    grid[:, 0] = True
    grid[n - 1, :] = True
    grid[0, :] = np.arange(n) % 2 == 0
    grid[:, n - 1] = np.arange(n) % 2 == 1
    grid[n - 1, n - 1] = True
    return grid


@cache
def _code128_like_patterns() -> tuple[tuple[int, ...], ...]:
    """107 element-width patterns with Code 128's structure: 3 bars and 3 spaces of widths 1..4,
    11 modules in all, an even number of bar modules. The mapping from value to pattern is this
    module's own (sorted enumeration), not the standard table."""
    patterns = [
        widths
        for widths in itertools.product(range(1, 5), repeat=6)
        if sum(widths) == 11 and (widths[0] + widths[2] + widths[4]) % 2 == 0
    ]
    return (*patterns[:106], (2, 3, 3, 1, 1, 1, 2))  # the last one is the stop pattern


def linear_modules(payload: str) -> npt.NDArray[np.bool_]:
    """Module sequence (True = bar) of a GS1-128-like symbol for ``payload``, with quiet zones.

    Values: start C (105), FNC1 (102), then digit pairs (00..99; any other character takes
    ``ord(c) - 32`` modulo 100 on its own), a modulo-103 check value, and the stop pattern.
    """
    values = [105, 102]
    data = payload.replace("\x1d", "")
    i = 0
    while i < len(data):
        pair = data[i : i + 2]
        if len(pair) == 2 and pair.isdigit():
            values.append(int(pair))
            i += 2
        else:
            values.append((ord(data[i]) - 32) % 100)
            i += 1
    check = (values[0] + sum(k * v for k, v in enumerate(values[1:], start=1))) % 103
    values.append(check)
    patterns = _code128_like_patterns()
    widths: list[int] = []
    for value in values:
        widths.extend(patterns[value])
    widths.extend(patterns[106])
    quiet = 10
    modules = [False] * quiet
    for k, width in enumerate(widths):
        modules.extend([k % 2 == 0] * width)
    modules.extend([False] * quiet)
    return np.array(modules, dtype=bool)

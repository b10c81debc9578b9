"""SKUs and GS1-style serialization: check digits, catalogue, symbols."""

from __future__ import annotations

import numpy as np
import pytest

from inspectloop.simulator.products import (
    SERIAL_DIGITS,
    build_catalogue,
    datamatrix_modules,
    default_catalogue,
    find_sku,
    gs1_check_digit,
    gtin14,
    is_valid_gtin,
    linear_modules,
    sample_serial,
)


def test_gs1_check_digit_known_example() -> None:
    assert gs1_check_digit("0950600013435") == 2
    assert gtin14("0950600013435") == "09506000134352"
    assert is_valid_gtin("09506000134352")
    assert not is_valid_gtin("09506000134353")
    assert is_valid_gtin("4006381333931")  # an EAN-13 from the GS1 examples


def test_gs1_check_digit_rejects_non_digits() -> None:
    with pytest.raises(ValueError, match="digits"):
        gs1_check_digit("12a4")
    with pytest.raises(ValueError, match="13 data digits"):
        gtin14("123")


def test_catalogue_is_fixed_and_valid() -> None:
    skus = default_catalogue()
    assert skus == build_catalogue()
    assert len(skus) == 4
    assert len({s.drug_name for s in skus}) == 4
    for sku in skus:
        assert len(sku.gtin) == 14
        assert is_valid_gtin(sku.gtin)
        assert sku.lot.isalnum()
        assert sku.payload("123").startswith(f"01{sku.gtin}17{sku.expiry_yymmdd}10{sku.lot}")
        assert find_sku(sku.sku_id) == sku
    assert build_catalogue(seed=1) != skus
    with pytest.raises(KeyError):
        find_sku("SKU-99")


def test_serials_and_symbols_depend_on_payload() -> None:
    rng = np.random.default_rng(0)
    serials = {sample_serial(rng) for _ in range(50)}
    assert len(serials) == 50
    assert all(len(s) == SERIAL_DIGITS and s.isdigit() and s[0] != "0" for s in serials)

    a, b = datamatrix_modules("payload-1"), datamatrix_modules("payload-2")
    assert a.shape == (18, 18)
    assert a[:, 0].all() and a[-1, :].all()  # the L finder
    assert list(a[0, :4]) == [True, False, True, False]  # the clock track
    assert (a != b).sum() > 50
    assert np.array_equal(a, datamatrix_modules("payload-1"))

    bars1, bars2 = linear_modules("0109506000134352"), linear_modules("0109506000134369")
    assert not bars1[:10].any() and not bars1[-10:].any()  # quiet zones
    assert bars1[10]  # starts with a bar
    assert not np.array_equal(bars1, bars2)

"""``maos.numbers``: strict parsing of numbers that come from outside."""

from __future__ import annotations

import pytest

from maos.numbers import (
    MAX_INT64,
    NumberError,
    check_float,
    check_int,
    check_stream_id,
    parse_float,
    parse_int,
)

BAD_INTS = ["", " ", "1_000", "١٢", "0x10", "1e3", "1.0", "nan", "--1", "+", "1 2", "1" + "0" * 5000]


@pytest.mark.parametrize("text", BAD_INTS)
def test_parse_int_refuses_and_names_the_parameter(text: str) -> None:
    with pytest.raises(NumberError, match="--count must be an integer") as caught:
        parse_int(text, "--count")
    assert len(str(caught.value)) < 200  # a 5,000-digit input is not echoed in full


def test_parse_int_bounds() -> None:
    assert parse_int(" 42 ", "n") == 42
    assert parse_int("+7", "n") == 7
    assert parse_int("0000000000000000000000000000042", "n") == 42
    assert parse_int(str(MAX_INT64), "n") == MAX_INT64
    with pytest.raises(NumberError):
        parse_int(str(MAX_INT64 + 1), "n")
    with pytest.raises(NumberError):
        parse_int("-1", "n")
    assert parse_int("-5", "n", min_value=-10) == -5


@pytest.mark.parametrize("value", [True, None, "1", 10**400, -1, float("nan"), 1.5, float("inf")])
def test_check_int_refuses(value: object) -> None:
    with pytest.raises(NumberError, match="count"):
        check_int(value, "count")


def test_check_int_takes_an_integral_float() -> None:
    assert check_int(3.0, "n") == 3


@pytest.mark.parametrize(
    "text", ["nan", "inf", "-inf", "1e400", "1_0", "١", "", "0x1", "1e", "-1", "9" * 400]
)
def test_parse_float_refuses(text: str) -> None:
    with pytest.raises(NumberError, match="--wait-s must be a number"):
        parse_float(text, "--wait-s")


def test_parse_float_accepts_decimals() -> None:
    assert parse_float("0.25", "w") == 0.25
    assert parse_float(".5", "w") == 0.5
    assert parse_float("1e2", "w") == 100.0
    assert check_float(10, "w") == 10.0
    with pytest.raises(NumberError):
        check_float(10**400, "w")  # never converted to float (OverflowError)
    with pytest.raises(NumberError):
        check_float(True, "w")


@pytest.mark.parametrize("text", ["0", "42", str(MAX_INT64), "1700000000000-0", f"{2**64 - 1}-{2**64 - 1}"])
def test_stream_ids(text: str) -> None:
    assert check_stream_id(text, "after") == text


@pytest.mark.parametrize(
    "text", ["", "-1", "1-", "a", "1_0", "١", str(MAX_INT64 + 1), f"{2**64}-0", "1-2-3", "1" * 400, " 1", "$"]
)
def test_bad_stream_ids(text: str) -> None:
    with pytest.raises(NumberError, match="after must be an event id"):
        check_stream_id(text, "after")

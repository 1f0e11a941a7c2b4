"""Page tokens: fleet's encoding, Go's decoder errors byte for byte, and the slicing rules."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.api.errors import BadRequest
from fleetd.api.pagination import (
    PageToken,
    go_base64_url_decode,
    page_of,
    parse_page_token,
)


def test_the_tokens_fleet_documents() -> None:
    assert PageToken(100, 2).encode() == "ZAACAA=="
    assert parse_page_token(["ZAACAA=="], 100) == PageToken(100, 2)
    assert go_base64_url_decode("EwBMLg==") == struct.pack("<HH", 19, 11852)


def test_no_token_is_the_first_page() -> None:
    assert parse_page_token([], 100) == PageToken(100, 1)
    assert parse_page_token([], 7) == PageToken(7, 1)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["ZAACAA==", "ZAADAA=="], "too many values for page token"),
        (["EwBMLg=="], "token limit must be 100"),
        (["ZAAAAA=="], "token page must be greater than zero"),
        (["ZAACAA"], "illegal base64 data at input byte 4"),
        (["ZAACAA="], "illegal base64 data at input byte 7"),
        (["ZAACAA==x"], "illegal base64 data at input byte 8"),
        (["ZAAC!AAA"], "illegal base64 data at input byte 4"),
        (["ZAACAA+/"], "illegal base64 data at input byte 6"),  # the standard alphabet
        (["Z==="], "illegal base64 data at input byte 1"),
        (["=AAA"], "illegal base64 data at input byte 0"),
        (["ZAACA=x="], "illegal base64 data at input byte 5"),
        (["ZAACAA=x"], "illegal base64 data at input byte 6"),
        ([""], "EOF"),
        (["\n"], "EOF"),
        (["ZA=="], "unexpected EOF"),
        (["ZAAC"], "unexpected EOF"),
    ],
)
def test_bad_tokens_get_fleets_messages(values: list[str], message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_page_token(values, 100)
    assert caught.value.message == message


def test_the_limit_is_the_servers() -> None:
    with pytest.raises(BadRequest, match=r"^token limit must be 19$"):
        parse_page_token(["ZAACAA=="], 19)
    assert parse_page_token([PageToken(19, 3).encode()], 19) == PageToken(19, 3)


def test_newlines_are_skipped_and_extra_bytes_ignored_as_in_go() -> None:
    assert parse_page_token(["ZA\r\nACAA==\n"], 100) == PageToken(100, 2)
    six_bytes = base64.urlsafe_b64encode(struct.pack("<HHH", 100, 3, 9)).decode()
    assert parse_page_token([six_bytes], 100) == PageToken(100, 3)


@given(st.binary(max_size=24))
def test_the_decoder_agrees_with_the_standard_library_on_padded_input(raw: bytes) -> None:
    assert go_base64_url_decode(base64.urlsafe_b64encode(raw).decode()) == raw


@given(st.integers(1, 0xFFFF), st.integers(1, 0xFFFF))
def test_tokens_round_trip(limit: int, page: int) -> None:
    token = PageToken(limit, page)
    assert parse_page_token([token.encode()], limit) == token


@pytest.mark.parametrize(
    ("total", "page", "items", "next_page"),
    [
        (0, 1, [], None),
        (5, 1, [0, 1, 2, 3, 4], None),
        (10, 1, list(range(10)), 2),  # an exact multiple: one more, empty, page (fleet's quirk)
        (10, 2, [], None),
        (11, 2, [10], None),
        (25, 2, list(range(10, 20)), 3),
        (25, 9, [], None),
    ],
)
def test_page_of(total: int, page: int, items: list[int], next_page: int | None) -> None:
    result = page_of(list(range(total)), PageToken(10, page))
    assert list(result.items) == items
    expected = None if next_page is None else PageToken(10, next_page)
    assert result.next_token == expected


def test_no_token_past_the_last_16_bit_page() -> None:
    result = page_of(list(range(0xFFFF + 1)), PageToken(1, 0xFFFF))
    assert list(result.items) == [0xFFFE]
    assert result.next_token is None

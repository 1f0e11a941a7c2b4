"""fleet's page tokens: which slice of a sorted collection one list request returns.

A token is 4 bytes, little-endian `uint16 limit` then `uint16 page` (1-based), in URL-safe base64
with padding; the first page has no token, so page 2 of 100 is `ZAACAA==`. The limit is the
server's `token_limit`: a client cannot choose it, and a token with another limit is refused.

Invariants:
* Every refusal is a `BadRequest` carrying fleet's message: `too many values for page token`,
  the text of Go's decoders (`illegal base64 data at input byte N`, `EOF`, `unexpected EOF`),
  `token limit must be <limit>`, `token page must be greater than zero`.
* `page_of` returns items `[(page-1)*limit, page*limit)` and a next token exactly when
  `page*limit <= total` (so a total that is a multiple of the limit ends with an empty page, as in
  fleet), never a token whose page does not fit in 16 bits.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from fleetd.api.errors import BadRequest

T = TypeVar("T")

DEFAULT_TOKEN_LIMIT: Final = 100
MAX_PAGE: Final = 0xFFFF

_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_DIGITS: Final = {char: value for value, char in enumerate(_ALPHABET)}
_PAD: Final = "="
_NEWLINES: Final = "\r\n"


@dataclass(frozen=True, slots=True)
class PageToken:
    limit: int
    page: int

    def encode(self) -> str:
        """URL-safe padded base64 of the two little-endian uint16s."""
        return base64.urlsafe_b64encode(struct.pack("<HH", self.limit, self.page)).decode()


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a collection and the token of the next one, if any."""

    items: Sequence[T]
    next_token: PageToken | None


class _CorruptInput(ValueError):
    def __init__(self, offset: int) -> None:
        super().__init__(f"illegal base64 data at input byte {offset}")


def go_base64_url_decode(text: str) -> bytes:
    """Decode like Go's `base64.URLEncoding.DecodeString`, with its error offsets.

    Padding is required, CR and LF are skipped anywhere, anything after the padding is an error.
    """
    source = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    index = 0
    while index < len(source):
        index, chunk, done = _decode_quantum(source, index)
        out += chunk
        if done:
            break
    return bytes(out)


def _decode_quantum(source: bytes, index: int) -> tuple[int, bytes, bool]:
    """One 4-character group from `index`: (next index, its bytes, padding seen)."""
    digits: list[int] = []
    while len(digits) < 4:
        if index == len(source):
            if not digits:
                return index, b"", True
            raise _CorruptInput(index - len(digits))
        char = chr(source[index])
        index += 1
        if char in _NEWLINES:
            continue
        if char in _DIGITS:
            digits.append(_DIGITS[char])
            continue
        if char != _PAD or len(digits) < 2:
            raise _CorruptInput(index - 1)
        index = _skip_padding(source, index, len(digits))
        return index, _to_bytes(digits), True
    return index, _to_bytes(digits), False


def _skip_padding(source: bytes, index: int, seen: int) -> int:
    """Check the rest of the padding after its first `=`; the index after it."""
    if seen == 2:  # "==" expected: the second "=" must follow, CR/LF allowed in between
        while index < len(source) and chr(source[index]) in _NEWLINES:
            index += 1
        if index == len(source):
            raise _CorruptInput(len(source))
        if chr(source[index]) != _PAD:
            raise _CorruptInput(index - 1)
        index += 1
    while index < len(source) and chr(source[index]) in _NEWLINES:
        index += 1
    if index < len(source):
        raise _CorruptInput(index)  # trailing garbage after the padding
    return index


def _to_bytes(digits: list[int]) -> bytes:
    value = 0
    for digit in digits + [0] * (4 - len(digits)):
        value = (value << 6) | digit
    return value.to_bytes(3, "big")[: len(digits) - 1]


def parse_page_token(values: Sequence[str], limit: int) -> PageToken:
    """The page asked for by the `nextPageToken` query values; page 1 when there are none."""
    if len(values) > 1:
        raise BadRequest("too many values for page token")
    if not values:
        return PageToken(limit, 1)
    try:
        raw = go_base64_url_decode(values[0])
    except _CorruptInput as exc:
        raise BadRequest(str(exc)) from None
    if len(raw) < 4:
        raise BadRequest("unexpected EOF" if raw else "EOF")
    token = PageToken(*struct.unpack_from("<HH", raw))
    if token.limit != limit:
        raise BadRequest(f"token limit must be {limit}")
    if token.page == 0:
        raise BadRequest("token page must be greater than zero")
    return token


def page_of(items: Sequence[T], token: PageToken) -> Page[T]:
    """The items of the token's page, and the next page's token (see the module docstring)."""
    start, stop = (token.page - 1) * token.limit, token.page * token.limit
    if start >= len(items):
        return Page((), None)
    has_next = stop <= len(items) and token.page < MAX_PAGE
    next_token = PageToken(token.limit, token.page + 1) if has_next else None
    return Page(items[start:stop], next_token)

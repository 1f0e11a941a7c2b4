"""`--fields` parsing shared by the list commands."""

from __future__ import annotations

import pytest

from fleetctl.commands.tables import FieldsError, parse_fields


def test_fields_keep_their_order_and_repeats() -> None:
    assert parse_fields("sub,unit,sub", ("unit", "sub")) == ["sub", "unit", "sub"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Must define output format"),
        ("unit,", 'Invalid key in output format: ""'),
        ("unit,UNIT", 'Invalid key in output format: "UNIT"'),
        ("unit, sub", 'Invalid key in output format: " sub"'),
    ],
)
def test_bad_fields(value: str, message: str) -> None:
    with pytest.raises(FieldsError, match=f"^{message}$"):
        parse_fields(value, ("unit", "sub"))

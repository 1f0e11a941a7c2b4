"""Reading Server-Sent Events line by line, as the HTML standard says."""

from __future__ import annotations

from fleetctl.sse import ServerEvent, SSEParser


def feed(*lines: str) -> list[ServerEvent]:
    parser = SSEParser()
    return [event for line in lines if (event := parser.feed(line)) is not None]


def test_events_comments_and_fields() -> None:
    got = feed(
        "retry: 2000",
        ": live after revision 3",
        "",
        "id: 4",
        "event: unit",
        'data: {"unit": "a.service"}',
        "",
        "event: dropped",
        'data:{"reason": "slow"}',
        "",
    )
    assert got == [
        ServerEvent("4", "unit", {"unit": "a.service"}),
        ServerEvent(None, "dropped", {"reason": "slow"}),
    ]


def test_data_over_several_lines_and_odd_data() -> None:
    assert feed("data: [1,", "data: 2]", "") == [ServerEvent(None, "message", {"value": [1, 2]})]
    assert feed("data: not json", "") == [ServerEvent(None, "message", {"text": "not json"})]
    assert feed("id: 9", "") == []  # no data: no event

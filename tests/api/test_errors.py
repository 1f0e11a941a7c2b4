"""The one table from errors to statuses, and fleet's envelope."""

from __future__ import annotations

import json

import pytest

from fleetd.api.errors import (
    OUTCOME_UNKNOWN_MESSAGE,
    UNAVAILABLE_MESSAGE,
    BadRequest,
    BodyTooLarge,
    DesiredStateRequired,
    MethodNotAllowed,
    OptionsRequired,
    RouteNotFound,
    Unauthorized,
    Unavailable,
    UnitNotFound,
    UnitStateNotFound,
    UnsupportedMediaType,
    error_response,
    response_for,
    status_and_message,
)
from fleetd.core.names import UnitNameError
from fleetd.core.submission import InvalidUnit, RecordTooLarge
from fleetd.registry.codec import CodecError
from fleetd.registry.errors import (
    EtcdCompacted,
    EtcdError,
    EtcdRequestTooLarge,
    EtcdResponseTooLarge,
    EtcdUnavailable,
)
from fleetd.registry.writes import WriteOutcomeUnknown


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (BadRequest("token limit must be 100"), 400, "token limit must be 100"),
        (
            InvalidUnit('cannot activate template "a@.service"'),
            400,
            'cannot activate template "a@.service"',
        ),
        (UnitNameError('unit name must contain "."'), 400, 'unit name must contain "."'),
        (Unauthorized("no token"), 401, "no token"),
        (UnitNotFound(), 404, "unit does not exist"),
        (UnitStateNotFound(), 404, "unit state does not exist"),
        (RouteNotFound(), 404, ""),
        (
            MethodNotAllowed("only GET supported against this resource"),
            405,
            "only GET supported against this resource",
        ),
        (OptionsRequired(), 409, "unit does not exist and options field empty"),
        (DesiredStateRequired(), 409, "must provide DesiredState to update existing unit"),
        (BodyTooLarge("too big"), 413, "too big"),
        (RecordTooLarge("unit a.service would be"), 413, "unit a.service would be"),
        (EtcdRequestTooLarge("Txn: the write is larger"), 413, "Txn: the write is larger"),
        (EtcdResponseTooLarge("Range: larger than max"), 500, ""),
        (
            UnsupportedMediaType("expected 1 Content-Type, got 0"),
            415,
            "expected 1 Content-Type, got 0",
        ),
        (Unavailable(), 503, UNAVAILABLE_MESSAGE),
        (Unavailable("unit a.service kept changing"), 503, "unit a.service kept changing"),
        (WriteOutcomeUnknown("etcd did not answer: Txn: ..."), 504, OUTCOME_UNKNOWN_MESSAGE),
        (EtcdUnavailable("Range: UNAVAILABLE: connection refused"), 503, UNAVAILABLE_MESSAGE),
        (TimeoutError(), 503, UNAVAILABLE_MESSAGE),
        (EtcdCompacted("gone"), 500, ""),
        (EtcdError("Txn: INVALID_ARGUMENT: too many operations"), 500, ""),
        (CodecError("units/a: not valid JSON"), 500, ""),
        (RuntimeError("a bug"), 500, ""),
    ],
)
def test_every_error_has_one_status(error: Exception, status: int, message: str) -> None:
    assert status_and_message(error) == (status, message)
    response = response_for(error)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert json.loads(bytes(response.body)) == {"error": {"code": status, "message": message}}


def test_the_envelope_is_fleets_bytes() -> None:
    response = error_response(400, 'unit name must contain "."')
    assert response.body == b'{"error":{"code":400,"message":"unit name must contain \\".\\""}}'
    assert error_response(404, "").body == b'{"error":{"code":404,"message":""}}'


def test_401_names_the_scheme() -> None:
    assert response_for(Unauthorized("x")).headers["www-authenticate"] == "Bearer"

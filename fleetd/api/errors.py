"""The API's errors and the one table that turns any of them into a status code and fleet's body.

Every refusal leaves as `{"error":{"code":<status>,"message":"<text>"}}` with
`Content-Type: application/json`; `message` is always present and may be "". Domain errors
(`ApiError` subclasses, core's `InvalidUnit` and `UnitNameError`, the registry's errors) are
mapped to statuses only in `STATUS_OF`; routes and services raise, they never build error
responses.

Invariants: bad input is always a 4xx. An unreachable or slow etcd is a 503 with
`UNAVAILABLE_MESSAGE`, never a hang (callers bound their waits), and a 503 means nothing was
written; a write whose outcome etcd never told is a 504 saying so. Only a bug or a registry
error that is neither bad input nor an outage gives a 500, with an empty message as in fleet.
"""

from __future__ import annotations

from typing import Final

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetd.api.schemas import go_json
from fleetd.core.names import UnitNameError
from fleetd.core.submission import InvalidUnit, RecordTooLarge
from fleetd.registry.errors import EtcdError, EtcdRequestTooLarge, EtcdUnavailable
from fleetd.registry.writes import WriteOutcomeUnknown

log = structlog.get_logger(__name__)

UNAVAILABLE_MESSAGE: Final = "fleet server unable to communicate with etcd"
OUTCOME_UNKNOWN_MESSAGE: Final = (
    "fleet server lost etcd's answer to the write: it may or may not have been applied"
)


class ApiError(Exception):
    """A request the API refuses; `str(error)` is the message sent."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    """Malformed or invalid input: a body, a token, a name, an option, a state."""


class Unauthorized(ApiError):
    """No bearer token, or the wrong one."""


class UnitNotFound(ApiError):
    def __init__(self) -> None:
        super().__init__("unit does not exist")


class UnitStateNotFound(ApiError):
    def __init__(self) -> None:
        super().__init__("unit state does not exist")


class RouteNotFound(ApiError):
    """No resource at this path (fleet says nothing more)."""


class MethodNotAllowed(ApiError):
    """The resource exists but not with this method."""


class OptionsRequired(ApiError):
    def __init__(self) -> None:
        super().__init__("unit does not exist and options field empty")


class DesiredStateRequired(ApiError):
    def __init__(self) -> None:
        super().__init__("must provide DesiredState to update existing unit")


class BodyTooLarge(ApiError):
    """The request body is over the limit (checked on Content-Length and while streaming)."""


class UnsupportedMediaType(ApiError):
    """PUT without exactly one `Content-Type: application/json`."""


class Unavailable(ApiError):
    """etcd cannot be reached in time, or the view has not been filled yet."""

    def __init__(self, message: str = UNAVAILABLE_MESSAGE) -> None:
        super().__init__(message)


class UnitNotRunning(ApiError):
    """The unit runs nowhere (not placed, or its machine reports it inactive): no journal."""


class PeerUnavailable(ApiError):
    """Another machine's fleetd, asked on the client's behalf, could not be reached or refused."""


# Checked in order with isinstance: subclasses before their bases.
STATUS_OF: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (BadRequest, 400),
    (InvalidUnit, 400),
    (UnitNameError, 400),
    (Unauthorized, 401),
    (UnitNotFound, 404),
    (UnitStateNotFound, 404),
    (RouteNotFound, 404),
    (MethodNotAllowed, 405),
    (OptionsRequired, 409),
    (DesiredStateRequired, 409),
    (UnitNotRunning, 409),
    (BodyTooLarge, 413),
    (RecordTooLarge, 413),
    (EtcdRequestTooLarge, 413),
    (UnsupportedMediaType, 415),
    (Unavailable, 503),
    (EtcdUnavailable, 503),
    (TimeoutError, 503),
    (PeerUnavailable, 502),
    (WriteOutcomeUnknown, 504),
    (EtcdError, 500),
)


def status_and_message(error: BaseException) -> tuple[int, str]:
    """The status and message sent for `error`; 500 with "" for anything unexpected."""
    status = next((code for kind, code in STATUS_OF if isinstance(error, kind)), 500)
    if status == 503 and not isinstance(error, Unavailable):
        return status, UNAVAILABLE_MESSAGE
    if status == 504:
        return status, OUTCOME_UNKNOWN_MESSAGE
    if status == 500:
        return status, ""
    return status, str(error)


def error_response(status: int, message: str) -> Response:
    """fleet's error envelope."""
    body = go_json({"error": {"code": status, "message": message}})
    return Response(body, status_code=status, media_type="application/json")


def response_for(error: BaseException) -> Response:
    status, message = status_and_message(error)
    if status == 500:
        log.error("request failed", error=repr(error), exc_info=error)
    elif status == 503:
        log.info("request refused: etcd unavailable", error=repr(error))
    elif status == 504:
        log.warning("write outcome unknown: etcd did not answer", error=str(error))
    response = error_response(status, message)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _domain_error(request: Request, error: Exception) -> Response:
    return response_for(error)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    return error_response(400, str(first.get("msg", "")))


def install_error_handlers(
    app: FastAPI, not_allowed: dict[str, tuple[int, str]], *, default_not_allowed: str = ""
) -> None:
    """Register the handlers. `not_allowed` maps a route's path to what other methods get."""

    async def routing_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 405:
            route = request.scope.get("route")
            path = getattr(route, "path", "")
            status, message = not_allowed.get(path, (405, default_not_allowed))
            return error_response(status, message)
        return error_response(error.status_code, "")

    for kind, _status in STATUS_OF:
        if issubclass(kind, Exception):
            app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(StarletteHTTPException, routing_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

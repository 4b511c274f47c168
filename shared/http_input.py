"""Reading an HTTP request safely: correlation id, verified app role, body size, content type, JSON.

Each check raises :class:`RequestRejectedError` carrying the RFC 9457 problem to answer with, so
the blueprint stays a straight line. None of the problems quote the body.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import azure.functions as func

from shared import json_limits
from shared.caller_auth import (
    CallerVerifier,
    ForbiddenError,
    IdentityProviderUnavailableError,
    UnauthenticatedError,
)
from shared.json_limits import JsonTooDeepError
from shared.problems import FieldError, Problem, problem, problem_response

logger = logging.getLogger(__name__)

CORRELATION_HEADER = "x-correlation-id"
PROBLEM_TYPE_PREFIX = "urn:d365-commerce-connector:problem:"
_CORRELATION = re.compile(r"[A-Za-z0-9._:-]{8,64}")
_JSON_MEDIA = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json", re.IGNORECASE)


class RequestRejectedError(Exception):
    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{problem.status} {problem.title}")
        self.problem = problem
        self.headers = headers or {}


def correlation_id_for(req: func.HttpRequest) -> str:
    """The caller's ``x-correlation-id`` when it is a sane token, else a new one."""
    given = (req.headers.get(CORRELATION_HEADER) or "").strip()
    return given if _CORRELATION.fullmatch(given) else str(uuid.uuid4())


def reject(
    status: int,
    kind: str,
    title: str,
    detail: str,
    cid: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> RequestRejectedError:
    return RequestRejectedError(
        problem(
            status,
            correlation_id=cid,
            title=title,
            detail=detail,
            problem_type=PROBLEM_TYPE_PREFIX + kind,
            errors=errors or [],
        ),
        headers,
    )


async def require_app_role(req: func.HttpRequest, role: str, cid: str, callers: CallerVerifier) -> None:
    """The caller must prove ``role``: through App Service authentication's principal header, read
    only when the platform says authentication is on, or through an Entra bearer token verified
    here (:mod:`shared.caller_auth`). No or an unverifiable credential answers 401, a verified
    caller without the role 403, Entra's keys out of reach 503; the request goes no further."""
    try:
        await callers.require_role(req.headers, role)
    except UnauthenticatedError as exc:
        raise reject(
            401,
            "unauthorized",
            "Unauthorized",
            f"The caller could not be verified: {exc}.",
            cid,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
    except ForbiddenError as exc:
        raise reject(403, "forbidden", "Forbidden", f"The caller is verified but {exc}.", cid) from None
    except IdentityProviderUnavailableError:
        raise reject(
            503,
            "identity-provider-unavailable",
            "Service Unavailable",
            "The caller's token cannot be checked now; try again later.",
            cid,
            headers={"Retry-After": "30"},
        ) from None


def read_json(req: func.HttpRequest, *, max_bytes: int, cid: str) -> Any:
    """The body as JSON: at most ``max_bytes`` (413), a JSON media type (415), valid UTF-8 JSON
    nested at most ``MAX_JSON_DEPTH`` levels (400)."""
    declared = req.headers.get("Content-Length")
    body = req.get_body() or b""
    if (declared is not None and declared.strip().isdigit() and int(declared) > max_bytes) or len(
        body
    ) > max_bytes:
        raise reject(
            413,
            "payload-too-large",
            "Payload Too Large",
            f"The body must be at most {max_bytes} bytes.",
            cid,
            errors=[FieldError(path="", message=f"the body must be at most {max_bytes} bytes")],
        )
    content_type = req.headers.get("Content-Type") or ""
    media, _, parameters = content_type.partition(";")
    charset = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_-]+)", parameters)
    if not _JSON_MEDIA.fullmatch(media.strip()) or (
        charset and charset.group(1).lower() not in ("utf-8", "utf8")
    ):
        raise reject(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            "Send the body as application/json in UTF-8.",
            cid,
            errors=[FieldError(path="Content-Type", message="must be application/json in UTF-8")],
        )
    try:
        return json_limits.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except JsonTooDeepError as exc:
        raise reject(
            400,
            "invalid-json",
            "The body is not valid JSON",
            "The body nests arrays and objects too deeply.",
            cid,
            errors=[FieldError(path="", message=str(exc))],
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise reject(
            400,
            "invalid-json",
            "The body is not valid JSON",
            "The body could not be parsed as JSON.",
            cid,
            errors=[FieldError(path="", message="the body is not valid JSON")],
        ) from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def rejected_response(exc: RequestRejectedError, cid: str, function: str) -> func.HttpResponse:
    """The problem response of a refused request, logged with its field paths (never values)."""
    paths = ", ".join(error.path or "<body>" for error in exc.problem.errors[:20])
    logger.warning(
        "%s answered %d (%s)%s [correlation id %s]",
        function,
        exc.problem.status,
        exc.problem.type.rsplit(":", 1)[-1],
        f" fields: {paths}" if paths else "",
        cid,
    )
    return problem_response(exc.problem, headers={CORRELATION_HEADER: cid, **exc.headers})


def unexpected_response(exc: Exception, cid: str, function: str) -> func.HttpResponse:
    """A 500 problem with the correlation id; the log gets the type only (the text may quote data)."""
    logger.error("%s failed unexpectedly (%s) [correlation id %s]", function, type(exc).__name__, cid)
    failure = reject(
        500, "internal", "Internal Server Error", "The connector failed; quote the correlation id.", cid
    )
    return problem_response(failure.problem, headers={CORRELATION_HEADER: cid})

"""HTTP functions of the customers feature: ``POST /api/customers`` and ``POST /api/store-commerce/links``.

Binding glue only: read and check the request, call one service function, write the answer.
Both run at auth level FUNCTION (a function key); with ``EASY_AUTH_ENABLED`` the caller must also
prove the ``CUSTOMERS_APP_ROLE`` app role (``shared.caller_auth``: the platform's principal header
only when App Service authentication is really on, or a verified Entra bearer token).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import azure.functions as func
from pydantic import ValidationError

from shared import telemetry
from shared.customers.idempotency import InvalidIdempotencyKeyError, check_key
from shared.customers.links import DeepLinkRequest, build_links
from shared.customers.models import CreateCustomerRequest
from shared.customers.service import REPLAY_HEADER, Outcome, command_from, customer_service
from shared.http_input import (
    CORRELATION_HEADER,
    RequestRejectedError,
    correlation_id_for,
    read_json,
    reject,
    rejected_response,
    require_app_role,
    unexpected_response,
)
from shared.problems import (
    PROBLEM_CONTENT_TYPE,
    FieldError,
    problem_from_validation_error,
)
from shared.runtime import Runtime, get_runtime
from shared.store_commerce import DeepLinkError, DeepLinkTooLongError, InvalidActionNameError

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]

IDEMPOTENCY_HEADER = "Idempotency-Key"


@bp.function_name("create_customer")
@bp.route(route="customers", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def create_customer(req: func.HttpRequest) -> func.HttpResponse:
    cid = correlation_id_for(req)
    started = time.perf_counter()
    with telemetry.invocation_span(
        "create_customer",
        trigger="http",
        attributes={
            "http.request.method": "POST",
            "http.route": "customers",
            "connector.correlation_id": cid,
        },
    ) as span:
        response = await _create_customer(req, cid)
        status = response.status_code
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            telemetry.set_error(span, f"HTTP {status}")
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        outcome = _outcome_of(response)
        telemetry.CUSTOMERS_CREATED.add(1, {"status": str(status), "outcome": outcome})
        telemetry.CUSTOMERS_DURATION.record(duration_ms, {"status": str(status)})
        logger.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "create_customer answered",
            extra={
                "event": "create_customer",
                "status": status,
                "outcome": outcome,
                "duration_ms": duration_ms,
                "correlation_id": cid,
            },
        )
    return response


def _outcome_of(response: func.HttpResponse) -> str:
    """The ``outcome`` dimension of an answer: a word per kind of status (low cardinality)."""
    status = response.status_code
    if status < 400:
        if response.headers.get(REPLAY_HEADER):
            return "replayed"
        return "created" if status == 201 else "ok"
    return _OUTCOMES.get(status, f"http_{status}")


_OUTCOMES = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    409: "conflict",
    413: "invalid",
    415: "invalid",
    422: "invalid",
    429: "throttled",
    500: "error",
    502: "upstream_error",
    503: "upstream_error",
    504: "upstream_error",
}


async def _create_customer(req: func.HttpRequest, cid: str) -> func.HttpResponse:
    try:
        runtime = await get_runtime()
        data = await _checked_body(req, runtime, cid)
        try:
            request = CreateCustomerRequest.model_validate(data)
        except ValidationError as exc:
            raise RequestRejectedError(problem_from_validation_error(exc, correlation_id=cid)) from None
        key = _idempotency_key(req, cid)
        service = customer_service(runtime)
        if service is None:
            logger.error("configuration fault: FNO_URL is not set [correlation id %s]", cid)
            raise reject(
                503,
                "not-configured",
                "Customer creation is not configured",
                "The connector has no F&O environment configured.",
                cid,
            )
        outcome = await service.create(
            command_from(request.to_fno_payload(), correlation_id=cid, idempotency_key=key)
        )
        return _response(outcome, cid)
    except RequestRejectedError as exc:
        return rejected_response(exc, cid, "create_customer")
    except Exception as exc:
        return unexpected_response(exc, cid, "create_customer")


@bp.function_name("store_commerce_links")
@bp.route(route="store-commerce/links", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def store_commerce_links(req: func.HttpRequest) -> func.HttpResponse:
    cid = correlation_id_for(req)
    try:
        runtime = await get_runtime()
        data = await _checked_body(req, runtime, cid)
        try:
            request = DeepLinkRequest.model_validate(data)
        except ValidationError as exc:
            raise RequestRejectedError(problem_from_validation_error(exc, correlation_id=cid)) from None
        try:
            body = build_links(request, runtime.settings.cpos_url)
        except ValidationError as exc:
            # A built-in action's parameter model reports paths relative to "parameters".
            problem = problem_from_validation_error(exc, correlation_id=cid)
            errors = [FieldError(path=_join("parameters", e.path), message=e.message) for e in problem.errors]
            raise RequestRejectedError(problem.model_copy(update={"errors": errors})) from None
        except DeepLinkTooLongError as exc:
            raise reject(
                422,
                "deep-link-too-long",
                "The deep link would be too long",
                str(exc),
                cid,
                errors=[FieldError(path="parameters", message=str(exc))],
            ) from None
        except InvalidActionNameError as exc:
            raise reject(
                400,
                "validation",
                "The request is not valid",
                str(exc),
                cid,
                errors=[FieldError(path="actionName", message=str(exc))],
            ) from None
        except DeepLinkError as exc:
            raise reject(
                400,
                "validation",
                "The request is not valid",
                str(exc),
                cid,
                errors=[FieldError(path="parameters", message=str(exc))],
            ) from None
        return _response(Outcome(200, body, {CORRELATION_HEADER: cid}), cid)
    except RequestRejectedError as exc:
        return rejected_response(exc, cid, "store_commerce_links")
    except Exception as exc:
        return unexpected_response(exc, cid, "store_commerce_links")


async def _checked_body(req: func.HttpRequest, runtime: Runtime, cid: str) -> Any:
    settings = runtime.settings
    if settings.easy_auth_enabled:
        await require_app_role(req, settings.customers_app_role, cid, runtime.callers)
    return read_json(req, max_bytes=settings.customer_max_body_bytes, cid=cid)


def _idempotency_key(req: func.HttpRequest, cid: str) -> str | None:
    value = req.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    try:
        return check_key(value)
    except InvalidIdempotencyKeyError as exc:
        raise reject(
            400,
            "validation",
            "The request is not valid",
            str(exc),
            cid,
            errors=[FieldError(path=IDEMPOTENCY_HEADER, message=str(exc))],
        ) from None


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def _response(outcome: Outcome, cid: str) -> func.HttpResponse:
    # This request's correlation id always wins: a replayed outcome must not carry the first one's.
    kept = {k: v for k, v in outcome.headers.items() if k.lower() != CORRELATION_HEADER}
    headers = {"Cache-Control": "no-store", **kept, CORRELATION_HEADER: cid}
    is_problem = outcome.status >= 400
    return func.HttpResponse(
        body=json.dumps(outcome.body),
        status_code=outcome.status,
        mimetype=PROBLEM_CONTENT_TYPE if is_problem else "application/json",
        charset="utf-8",
        headers=headers,
    )

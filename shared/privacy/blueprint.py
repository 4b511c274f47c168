"""HTTP functions of the privacy feature: the signed unsubscribe link and the erasure request.

- ``GET|POST /api/unsubscribe?t=<token>`` runs at auth level ANONYMOUS: the token's signature is
  the authorisation. GET (the link clicked in the email) only checks the token and shows a page
  with one button; the POST of that button, or a mailbox provider's RFC 8058 one-click POST (body
  ``List-Unsubscribe=One-Click``), unsubscribes. GET changes nothing, because mail scanners and
  link previews follow links in emails and would otherwise unsubscribe people who never clicked.
- ``POST /api/privacy/erasure`` runs at auth level FUNCTION and, always, the caller must prove the
  ``PRIVACY_APP_ROLE`` app role (``shared.caller_auth``): through App Service authentication's
  principal header, trusted only when the platform says authentication is on, or an Entra bearer
  token verified here. Otherwise 401/403 and nothing is touched.

Logs hold counts and the correlation id only: never an address, an account or a token.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func
from pydantic import ValidationError

from shared.email.base import ProviderError
from shared.email.factory import provider_for
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
from shared.privacy.erasure import ErasureRequest, erase
from shared.privacy.suppression import SuppressionList
from shared.privacy.tokens import InvalidTokenError, WeakSecretError, check_secret, verify
from shared.problems import FieldError, problem_from_validation_error
from shared.runtime import get_runtime
from shared.secrets import SecretNotFoundError, SecretUnavailableError
from shared.timeutil import utcnow

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]

TOKEN_PARAMETER = "t"  # noqa: S105 (the query parameter's name)
ERASURE_MAX_BODY_BYTES = 4096
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>Unsubscribed</title></head>
<body><h1>You are unsubscribed</h1>
<p>We will not send you abandoned-cart emails any more.</p></body></html>
"""
# The form posts back to the same URL (its query keeps the token).
_CONFIRM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>Unsubscribe</title></head>
<body><h1>Unsubscribe from cart reminders?</h1>
<p>You will get no more emails about carts you left.</p>
<form method="post"><input type="hidden" name="confirm" value="yes">
<button type="submit">Unsubscribe</button></form></body></html>
"""
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


@bp.function_name("unsubscribe")
@bp.route(route="unsubscribe", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def unsubscribe(req: func.HttpRequest) -> func.HttpResponse:
    cid = correlation_id_for(req)
    try:
        runtime = await get_runtime()
        token = req.params.get(TOKEN_PARAMETER) or ""
        name = runtime.settings.unsubscribe_signing_secret_name
        try:
            secret = await runtime.secrets.get(name)
            check_secret(secret)
        except (SecretNotFoundError, WeakSecretError) as exc:
            fault = "is not set" if isinstance(exc, SecretNotFoundError) else "is too short"
            logger.error(
                "configuration fault: the unsubscribe signing secret %r (UNSUBSCRIBE_SIGNING_SECRET_NAME) "
                "%s [correlation id %s]",
                name,
                fault,
                cid,
            )
            raise reject(
                503,
                "not-configured",
                "Unsubscribe is not configured",
                "The connector cannot check unsubscribe links; quote the correlation id.",
                cid,
            ) from None
        except SecretUnavailableError:
            logger.error("unsubscribe: Key Vault did not answer in time [correlation id %s]", cid)
            raise reject(
                503,
                "secret-store-unavailable",
                "Unsubscribe is unavailable",
                "Try again in a few minutes.",
                cid,
                headers={"Retry-After": "60"},
            ) from None
        try:
            claims = verify(token, secret, now=utcnow())
        except InvalidTokenError as exc:
            message = (
                "the unsubscribe link has expired" if exc.expired else "the unsubscribe link is not valid"
            )
            raise reject(
                400,
                "validation",
                "The request is not valid",
                "The unsubscribe link is not valid or has expired.",
                cid,
                errors=[FieldError(path=TOKEN_PARAMETER, message=message)],
            ) from None
        headers = {"Cache-Control": "no-store", CORRELATION_HEADER: cid}
        if req.method.upper() != "POST":
            return func.HttpResponse(
                body=_CONFIRM, status_code=200, mimetype="text/html", charset="utf-8", headers=headers
            )
        await SuppressionList(runtime.store).add_hash(claims.email_hash, reason="unsubscribed", now=utcnow())
        logger.info("unsubscribe: 1 address suppressed [correlation id %s]", cid)
        if ONE_CLICK_BODY in (req.get_body() or b""):
            return func.HttpResponse(status_code=204, headers=headers)
        return func.HttpResponse(
            body=_PAGE, status_code=200, mimetype="text/html", charset="utf-8", headers=headers
        )
    except RequestRejectedError as exc:
        return rejected_response(exc, cid, "unsubscribe")
    except Exception as exc:
        return unexpected_response(exc, cid, "unsubscribe")


@bp.function_name("privacy_erasure")
@bp.route(route="privacy/erasure", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def privacy_erasure(req: func.HttpRequest) -> func.HttpResponse:
    cid = correlation_id_for(req)
    try:
        runtime = await get_runtime()
        settings = runtime.settings
        # Always, whatever EASY_AUTH_ENABLED says: a function key alone never erases anything.
        await require_app_role(req, settings.privacy_app_role, cid, runtime.callers)
        data = read_json(req, max_bytes=ERASURE_MAX_BODY_BYTES, cid=cid)
        try:
            request = ErasureRequest.model_validate(data)
        except ValidationError as exc:
            raise RequestRejectedError(problem_from_validation_error(exc, correlation_id=cid)) from None
        try:
            result = await erase(
                runtime.store,
                request,
                operating_unit_numbers=settings.operating_unit_numbers,
                preview_dir=settings.preview_dir,
                provider=provider_for(runtime),
                configured_provider=settings.email_provider,
                now=utcnow(),
            )
        except ProviderError as exc:
            logger.error(
                "erasure: the connector's own data is erased, the email provider failed: %s "
                "[correlation id %s]",
                exc,
                cid,
            )
            raise reject(
                502,
                "provider-erasure-failed",
                "The email provider did not erase",
                "The connector's own records were erased, the email provider's were not. Send the "
                "same request again; if it fails again, quote the correlation id.",
                cid,
            ) from None
        logger.info(
            "erasure: suppressed=%s, %d ledger entries, %d pointers and %d previews deleted, "
            "provider %s: %s [correlation id %s]",
            result.suppressed,
            result.ledger_entries_deleted,
            result.pointers_deleted,
            result.previews_deleted,
            result.provider.name,
            result.provider.action,
            cid,
        )
        return func.HttpResponse(
            body=json.dumps(result.body()),
            status_code=200,
            mimetype="application/json",
            charset="utf-8",
            headers={"Cache-Control": "no-store", CORRELATION_HEADER: cid},
        )
    except RequestRejectedError as exc:
        return rejected_response(exc, cid, "privacy_erasure")
    except Exception as exc:
        return unexpected_response(exc, cid, "privacy_erasure")

"""Store Commerce and Cloud POS deep links (reference/retail-server.md, section 7).

A deep link asks the POS to run one action::

    ms-d365sc://executeAction?actionName=<name>&param=<standard Base64 of UTF-8 JSON>
    {CPOS_URL}/POS?actionName=<name>&param=<same>

Built-in actions carry the ``D365.`` prefix and typed parameters (:class:`CreateTransactionParams`,
:class:`RecallOrderParams`); an extension's own action (``Contoso.PosExtensions.LogInventoryCheck``)
takes any JSON object. Only Microsoft may use ``D365.``, so a ``D365.`` name that is not a known
built-in is refused rather than sent to a POS that cannot run it. The documentation asks for the
whole URL to stay under 2,048 characters; longer ones raise :class:`DeepLinkTooLongError`.

Everything here is pure: no I/O, no clock, no settings.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

MAX_URL_LENGTH: Final = 2048
STORE_COMMERCE_SCHEME: Final = "ms-d365sc"
STORE_COMMERCE_HOST: Final = "executeAction"
CLOUD_POS_PATH: Final = "/POS"

CREATE_TRANSACTION: Final = "D365.CreateTransaction"
RECALL_ORDER: Final = "D365.RecallOrder"
BUILT_IN_PREFIX: Final = "D365."

# The POS parses `param` with JavaScript's JSON.parse, whose numbers are doubles: a product id
# above 2**53 - 1 would arrive silently changed, so it is refused here instead.
_MAX_SAFE_INTEGER: Final = 2**53 - 1
_ACTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_MAX_ACTION_NAME = 200


class DeepLinkError(ValueError):
    """A deep link cannot be built or read."""


class DeepLinkTooLongError(DeepLinkError):
    """The URL would reach the POS's length limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"deep link is {length} characters long; Store Commerce needs it under {limit} characters"
        )
        self.length = length
        self.limit = limit


class InvalidActionNameError(DeepLinkError):
    """The action name is not dotted identifiers, or claims an unknown built-in ``D365.`` action."""


class InvalidDeepLinkError(DeepLinkError):
    """A URL handed to :func:`parse_deep_link` is not a well-formed deep link."""


class _Params(BaseModel):
    # camelCase on the wire as the POS expects; snake_case in Python. Unknown fields are refused
    # so a typo ("customerID") fails here rather than being ignored by the POS.
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        str_strip_whitespace=True,
        frozen=True,
    )


class DeepLinkItem(_Params):
    """A line to add: the product **variant** RecordId and an optional quantity (the POS assumes 1)."""

    product_id: int = Field(gt=0, le=_MAX_SAFE_INTEGER, strict=True)
    quantity: Decimal | None = Field(
        default=None, gt=0, le=1_000_000, max_digits=13, decimal_places=6, allow_inf_nan=False
    )


class CreateTransactionParams(_Params):
    """Parameters of ``D365.CreateTransaction``: the documented ones (the full list is not published)."""

    # CustAccount is a 20-character string in F&O.
    customer_id: str | None = Field(default=None, min_length=1, max_length=20)
    items: list[DeepLinkItem] | None = None
    # Only "VoidAndCreate" is documented; other values are passed on as given.
    mode: str | None = Field(default=None, pattern=r"^[A-Za-z]{1,50}$")

    @model_validator(mode="after")
    def _not_empty(self) -> CreateTransactionParams:
        if self.customer_id is None and not self.items:
            raise ValueError("give customerId, items, or both")
        return self


class RecallOrderParams(_Params):
    """Parameters of ``D365.RecallOrder``."""

    # SalesId is a 20-character string in F&O.
    sales_id: str = Field(min_length=1, max_length=20)


BUILT_IN_ACTIONS: Final[Mapping[str, type[_Params]]] = {
    CREATE_TRANSACTION: CreateTransactionParams,
    RECALL_ORDER: RecallOrderParams,
}


def check_action_name(action: str) -> str:
    """``action`` if it is dotted identifiers and, when it starts with ``D365.``, a known built-in."""
    if len(action) > _MAX_ACTION_NAME or not _ACTION_NAME.fullmatch(action):
        raise InvalidActionNameError(
            "action name must be dotted identifiers such as Contoso.PosExtensions.LogInventoryCheck"
        )
    if action.upper().startswith(BUILT_IN_PREFIX.upper()) and action not in BUILT_IN_ACTIONS:
        known = ", ".join(sorted(BUILT_IN_ACTIONS))
        raise InvalidActionNameError(
            f"the D365. prefix is reserved for built-in actions ({known}); "
            "an extension's action is prefixed with its package name"
        )
    return action


def deep_link_params(action: str, params: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object the link will carry, validated for ``action``.

    A built-in action's parameters go through its model (a mapping raises
    :class:`pydantic.ValidationError`, whose paths use the wire names); an extension's are any JSON
    object with string keys.
    """
    check_action_name(action)
    model_type = BUILT_IN_ACTIONS.get(action)
    if model_type is not None:
        if isinstance(params, BaseModel):
            if not isinstance(params, model_type):
                raise DeepLinkError(f"{action} takes {model_type.__name__}, not {type(params).__name__}")
            model = params
        else:
            model = model_type.model_validate(dict(params))
        return _to_json_object(model.model_dump(mode="python", by_alias=True, exclude_none=True))
    if isinstance(params, BaseModel):
        return _to_json_object(params.model_dump(mode="python", by_alias=True, exclude_none=True))
    if not isinstance(params, Mapping):
        raise DeepLinkError("parameters must be a JSON object")
    return _to_json_object(params)


def _to_json_object(params: Mapping[str, Any]) -> dict[str, Any]:
    if not all(isinstance(key, str) for key in params):
        raise DeepLinkError("parameter names must be strings")
    result = {key: _json_value(value) for key, value in params.items()}
    try:
        # allow_nan=False: NaN and Infinity are not JSON and JSON.parse on the POS would reject them.
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DeepLinkError("parameters must be plain JSON values") from exc
    return result


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise DeepLinkError("parameters must be finite numbers")
        # Whole quantities travel as integers ("quantity": 2, as in the documentation's example).
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return _to_json_object(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value


def encode_param(params: Mapping[str, Any]) -> str:
    """Standard Base64 of the compact JSON.

    ``ensure_ascii`` keeps the JSON pure ASCII (non-ASCII as ``\\uXXXX`` escapes). That is still
    UTF-8, as the documentation asks, and it also decodes correctly on a POS that uses ``atob()``,
    which yields Latin-1 rather than UTF-8 text.
    """
    text = json.dumps(params, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _query(action: str, params: Mapping[str, Any]) -> str:
    # Standard Base64 uses '+', '/' and '='. Query parsers that decode form-style (Python's
    # parse_qs, JavaScript's URLSearchParams, .NET's ParseQueryString) turn a raw '+' into a space,
    # which corrupts the Base64, so '+' is percent-encoded as %2B; every decoder turns that back
    # into '+'. '/' and '=' are legal in a query, survive all of those parsers unchanged and appear
    # raw in the documentation's example, so they are left as they are.
    return f"actionName={quote(action, safe='.')}&param={quote(encode_param(params), safe='/=')}"


def _checked(url: str, max_length: int) -> str:
    if len(url) >= max_length:
        raise DeepLinkTooLongError(len(url), max_length)
    return url


def store_commerce_link(
    action: str, params: BaseModel | Mapping[str, Any], *, max_length: int = MAX_URL_LENGTH
) -> str:
    """``ms-d365sc://executeAction?actionName=...&param=...`` for ``action`` with ``params``."""
    body = deep_link_params(action, params)
    return _checked(f"{STORE_COMMERCE_SCHEME}://{STORE_COMMERCE_HOST}?{_query(action, body)}", max_length)


def cloud_pos_link(
    cpos_url: str,
    action: str,
    params: BaseModel | Mapping[str, Any],
    *,
    max_length: int = MAX_URL_LENGTH,
) -> str:
    """``{cpos_url}/POS?actionName=...&param=...``; ``cpos_url`` is the Cloud POS base URL."""
    parts = urlsplit(cpos_url.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise DeepLinkError("Cloud POS URL must be an http(s) URL without query or fragment")
    base = cpos_url.strip().rstrip("/")
    body = deep_link_params(action, params)
    return _checked(f"{base}{CLOUD_POS_PATH}?{_query(action, body)}", max_length)


@dataclass(frozen=True)
class DeepLink:
    """A parsed deep link. ``cloud_pos_url`` is the Cloud POS base URL, ``None`` for Store Commerce."""

    action_name: str
    params: dict[str, Any]
    form: Literal["storeCommerce", "cloudPos"]
    cloud_pos_url: str | None = None


def parse_deep_link(url: str) -> DeepLink:
    """Read either form of deep link back into its action name and parameters."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise InvalidDeepLinkError("not a URL") from exc
    scheme = parts.scheme.lower()
    cloud_pos_url: str | None = None
    form: Literal["storeCommerce", "cloudPos"]
    if scheme == STORE_COMMERCE_SCHEME:
        if parts.netloc.lower() != STORE_COMMERCE_HOST.lower() or parts.path not in ("", "/"):
            raise InvalidDeepLinkError(f"a Store Commerce deep link goes to {STORE_COMMERCE_HOST}")
        form = "storeCommerce"
    elif scheme in ("https", "http") and parts.netloc:
        if not parts.path.lower().endswith(CLOUD_POS_PATH.lower()):
            raise InvalidDeepLinkError("a Cloud POS deep link goes to {CPOS_URL}/POS")
        form = "cloudPos"
        cloud_pos_url = f"{parts.scheme}://{parts.netloc}{parts.path[: -len(CLOUD_POS_PATH)]}"
    else:
        raise InvalidDeepLinkError(f"scheme must be {STORE_COMMERCE_SCHEME} or https")
    query = parse_qs(parts.query, keep_blank_values=True)
    action = _single(query, "actionName")
    try:
        check_action_name(action)
    except InvalidActionNameError as exc:
        raise InvalidDeepLinkError(str(exc)) from exc
    return DeepLink(
        action_name=action,
        params=decode_param(_single(query, "param")),
        form=form,
        cloud_pos_url=cloud_pos_url,
    )


def _single(query: Mapping[str, list[str]], name: str) -> str:
    values = query.get(name, [])
    if len(values) != 1 or not values[0]:
        raise InvalidDeepLinkError(f"the link needs exactly one non-empty {name}")
    return values[0]


def decode_param(param: str) -> dict[str, Any]:
    """The JSON object inside a ``param`` value (already URL-decoded)."""
    # Base64 has no spaces: a space is a raw '+' that form-style decoding turned into one.
    text = param.strip().replace(" ", "+")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidDeepLinkError("param is not standard Base64") from exc
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidDeepLinkError("param is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise InvalidDeepLinkError("param must hold a JSON object")
    return value


# ----- the abandoned-cart email's "open this cart at the till" link


class PricedItem(BaseModel):
    """A cart line offered for the link, with the unit price used to pick lines to drop."""

    model_config = ConfigDict(frozen=True)

    product_id: int = Field(gt=0, le=_MAX_SAFE_INTEGER)
    quantity: Decimal | None = Field(default=None, gt=0)
    unit_price: Decimal = Field(ge=0, allow_inf_nan=False)

    @property
    def line_value(self) -> Decimal:
        return self.unit_price * (self.quantity if self.quantity is not None else 1)


@dataclass(frozen=True)
class TrimmedLink:
    """A CreateTransaction link and the product ids of the lines left out to fit the length limit."""

    url: str
    dropped_product_ids: list[int] = field(default_factory=list)


def build_create_transaction_link(
    customer_id: str | None,
    items: Sequence[PricedItem],
    *,
    mode: str | None = None,
    cpos_url: str | None = None,
    max_length: int = MAX_URL_LENGTH,
) -> TrimmedLink:
    """A ``D365.CreateTransaction`` link for a cart, leaving out its cheapest lines until it fits.

    Lines are dropped by line value (unit price x quantity), cheapest first, the later line first
    among equals; the kept lines stay in cart order. The Cloud POS form is built when ``cpos_url``
    is given. Raises :class:`DeepLinkTooLongError` if even the link without any line is too long,
    and :class:`DeepLinkError` if there is neither a customer nor a line to put in it.
    """
    by_value = sorted(range(len(items)), key=lambda i: (items[i].line_value, -i))
    last_error: DeepLinkTooLongError | None = None
    for dropped_count in range(len(items) + 1):
        dropped = set(by_value[:dropped_count])
        kept = [item for index, item in enumerate(items) if index not in dropped]
        if customer_id is None and not kept:
            break
        params = CreateTransactionParams(
            customer_id=customer_id,
            items=[DeepLinkItem(product_id=item.product_id, quantity=item.quantity) for item in kept] or None,
            mode=mode,
        )
        try:
            if cpos_url is None:
                url = store_commerce_link(CREATE_TRANSACTION, params, max_length=max_length)
            else:
                url = cloud_pos_link(cpos_url, CREATE_TRANSACTION, params, max_length=max_length)
        except DeepLinkTooLongError as exc:
            last_error = exc
            continue
        return TrimmedLink(url=url, dropped_product_ids=[items[i].product_id for i in sorted(dropped)])
    if last_error is not None:
        raise last_error
    raise DeepLinkError("a CreateTransaction link needs a customer or at least one line")

"""F&O wire shapes the client reads: the CreateCustomer answer and the ``CustomersV3`` entity."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.finance_ops.errors import field_of

# The partner's X++ contract names the account field; these are the spellings seen in the wild,
# matched case-insensitively, in this order. A bare JSON string is taken as the account itself
# only when it looks like one (a bare "Created" or "OK" is a status word, not an account).
ACCOUNT_NUMBER_FIELDS = ("customerAccNum", "CustomerAccount", "AccountNum", "customerAccount")
_MAX_ACCOUNT_LENGTH = 20  # CustAccount is a 20-character string in F&O
_BARE_ACCOUNT = re.compile(rf"(?=[^0-9]*[0-9])[A-Za-z0-9\-_./]{{1,{_MAX_ACCOUNT_LENGTH}}}")


def account_number_from(body: Any) -> str | None:
    """The new customer's account number in a CreateCustomer success body, if it carries one."""
    if isinstance(body, str):
        text = body.strip()
        return text if _BARE_ACCOUNT.fullmatch(text) else None
    for candidate in (field_of(body, name) for name in ACCOUNT_NUMBER_FIELDS):
        if isinstance(candidate, str | int) and not isinstance(candidate, bool):
            text = str(candidate).strip()
            if 0 < len(text) <= _MAX_ACCOUNT_LENGTH:
                return text
    return None


def contract_says_failed(body: Any) -> bool:
    """True for the X++ workaround contract ``{"Success": false, "Message": ...}`` sent with HTTP 200."""
    return field_of(body, "Success") is False


def odata_string(value: str) -> str:
    """An OData string literal: quoted, with single quotes doubled (the only escape OData has)."""
    return "'" + value.replace("'", "''") + "'"


class ExistingCustomer(BaseModel):
    """The ``CustomersV3`` fields the duplicate check selects."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    account: str = Field(alias="CustomerAccount", min_length=1)
    legal_entity: str = Field(alias="dataAreaId")

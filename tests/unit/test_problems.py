from __future__ import annotations

import copy
import json
import re
from typing import Any

import azure.functions as func
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import problems
from shared.customers.models import CreateCustomerRequest
from shared.problems import (
    PROBLEM_CONTENT_TYPE,
    VALIDATION_PROBLEM_TYPE,
    FieldError,
    Problem,
    problem,
    problem_from_validation_error,
    problem_response,
    safe_message,
    wire_path,
)
from tests.regex_bounds import UNBOUNDED, quantifier_bounds

BAD_EMAIL = "jo.private@@leaky-domain.example"
BAD_PHONE = "+1 (425) 555-01ab"
ADDRESS: dict[str, Any] = {
    "Street": "1 Microsoft Way",
    "Addresstype": "Billing",
    "PrimaryAddress": "Yes",
    "CountryCode": "USA",
}
VALID: dict[str, Any] = {
    "Customer": {
        "LegalEntity": "USRT",
        "FirstName": "Avery",
        "LastName": "Quinn",
        "CurrencyCode": "USD",
        "EmailAddress": "avery@example.com",
        "BillingAddress": [ADDRESS],
    }
}


def validation_error(body: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        CreateCustomerRequest.model_validate(body)
    return caught.value


def test_paths_use_wire_names_and_indexes() -> None:
    body = copy.deepcopy(VALID)
    body["Customer"]["BillingAddress"] = [ADDRESS, {**ADDRESS, "CountryCode": "US", "PrimaryAddress": "No"}]
    body["Customer"]["Nickname"] = "x"
    result = problem_from_validation_error(validation_error(body), correlation_id="cid-1")
    paths = {error.path for error in result.errors}
    assert paths == {"Customer.BillingAddress[1].CountryCode", "Customer.Nickname"}


def test_the_problem_has_the_rfc_9457_members_and_the_correlation_id() -> None:
    body = copy.deepcopy(VALID)
    body["Customer"]["CurrencyCode"] = "ABC"
    result = problem_from_validation_error(
        validation_error(body), correlation_id="cid-2", instance="/api/customers"
    )
    document = json.loads(result.to_json())
    assert document == {
        "type": VALIDATION_PROBLEM_TYPE,
        "title": "The request is not valid",
        "status": 400,
        "detail": "The request has 1 error, listed under errors by path.",
        "instance": "/api/customers",
        "correlationId": "cid-2",
        "errors": [
            {
                "path": "Customer.CurrencyCode",
                "message": "must be an ISO 4217 currency code such as USD or EUR",
            }
        ],
    }


def test_the_status_can_be_chosen() -> None:
    result = problem_from_validation_error(validation_error({}), correlation_id="c", status=422)
    assert result.status == 422
    assert result.errors == [FieldError(path="Customer", message="required field is missing")]


def test_a_bad_email_or_phone_never_appears_in_the_problem() -> None:
    body = copy.deepcopy(VALID)
    body["Customer"]["EmailAddress"] = BAD_EMAIL
    body["Customer"]["ContactNumber"] = BAD_PHONE
    result = problem_from_validation_error(validation_error(body), correlation_id="c")
    text = problem_response(result).get_body().decode("utf-8")
    assert {error.path for error in result.errors} == {"Customer.EmailAddress", "Customer.ContactNumber"}
    for leak in (BAD_EMAIL, "jo.private", "leaky-domain", "555-01", "42555501"):
        assert leak not in text


@pytest.mark.parametrize(
    "value",
    [
        "someone@bad domain.example",
        "someone@example.invalid",  # email-validator's reason names the domain
        "someone.example.com",
        "x" * 300 + "@example.com",  # too long
    ],
)
def test_email_library_reasons_are_not_passed_on(value: str) -> None:
    body = copy.deepcopy(VALID)
    body["Customer"]["EmailAddress"] = value
    result = problem_from_validation_error(validation_error(body), correlation_id="c")
    text = result.to_json()
    assert "someone" not in text and "example." not in text and "x" * 10 not in text
    assert result.errors[0].message.startswith("must be a valid email address")


def test_personal_data_sent_under_an_unknown_key_is_not_echoed() -> None:
    body = copy.deepcopy(VALID)
    body["Customer"]["jane.doe@example.com"] = "hello"
    body["Customer"]["SecondEmail"] = "jane.doe@example.com"
    result = problem_from_validation_error(validation_error(body), correlation_id="c")
    text = result.to_json()
    assert "jane.doe" not in text
    assert {error.path for error in result.errors} == {"Customer.<unrecognised name>", "Customer.SecondEmail"}
    assert all("unknown field" in error.message for error in result.errors)


def test_invalid_json_is_reported_at_the_root() -> None:
    with pytest.raises(ValidationError) as caught:
        CreateCustomerRequest.model_validate_json(b'{"Customer": {"EmailAddress": "leak@example.com"')
    result = problem_from_validation_error(caught.value, correlation_id="c")
    assert result.errors == [FieldError(path="", message="the body is not valid JSON")]
    assert "leak" not in result.to_json()


class _Other(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(max_length=3)
    count: int = Field(gt=0)


def test_messages_of_pydantic_rules_state_the_rule_only() -> None:
    with pytest.raises(ValidationError) as caught:
        _Other.model_validate({"note": "call 425 555 0199", "count": "lots"})
    messages = {
        error.path: error.message
        for error in problem_from_validation_error(caught.value, correlation_id="c").errors
    }
    assert messages == {"note": "String should have at most 3 characters", "count": "must be a whole number"}


def test_safe_message_scrubs_what_looks_like_personal_data() -> None:
    error = {
        "type": "custom",
        "msg": "value x@y.example or +1 425 555 0100 or SECRETVALUE is bad",
        "input": "SECRETVALUE",
    }
    message = safe_message(error)
    assert "x@y.example" not in message and "555" not in message and "SECRETVALUE" not in message
    assert message.count("[redacted]") == 3
    assert safe_message({"type": "value_error", "msg": "Value error, give A or B"}) == "give A or B"


def test_wire_path_formats() -> None:
    assert wire_path(()) == ""
    assert wire_path(("Customer", "ShippingAddress", 2, "State")) == "Customer.ShippingAddress[2].State"
    assert wire_path(("items", 0, "productId")) == "items[0].productId"
    assert wire_path(("Customer", "bad key!")) == "Customer.<unrecognised name>"


def test_problem_defaults_its_title_to_the_status_phrase() -> None:
    result = problem(503, correlation_id="c", detail="F&O is busy")
    assert (result.type, result.title, result.errors) == ("about:blank", "Service Unavailable", [])
    assert "instance" not in json.loads(result.to_json())
    with pytest.raises(ValidationError):
        Problem(title="x", status=200, correlation_id="c")


def test_problem_response_has_status_media_type_and_json_body() -> None:
    result = problem(409, correlation_id="cid-9", detail="already exists", problem_type="urn:x:duplicate")
    response = problem_response(result, headers={"Retry-After": "5"})
    assert isinstance(response, func.HttpResponse)
    assert response.status_code == 409
    assert response.mimetype == PROBLEM_CONTENT_TYPE == "application/problem+json"
    assert response.charset == "utf-8"
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.get_body())
    assert body["correlationId"] == "cid-9"
    assert (body["type"], body["status"], body["title"]) == ("urn:x:duplicate", 409, "Conflict")
    assert body["errors"] == []


def test_problem_accepts_the_wire_name_of_the_correlation_id() -> None:
    result = Problem.model_validate({"title": "t", "status": 400, "correlationId": "c"})
    assert result.correlation_id == "c"


UUID_CID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_instance_is_the_urn_of_a_uuid_correlation_id() -> None:
    assert problem(502, correlation_id=UUID_CID).instance == f"urn:uuid:{UUID_CID}"
    assert problem(502, correlation_id=UUID_CID.upper()).instance == f"urn:uuid:{UUID_CID}"
    result = problem_from_validation_error(validation_error({}), correlation_id=UUID_CID)
    assert json.loads(result.to_json())["instance"] == f"urn:uuid:{UUID_CID}"


@pytest.mark.parametrize(
    "cid", ["till-7-req-0042", "0f8fad5bd9cb469fa16570867728950e", "urn:uuid:" + UUID_CID, "c"]
)
def test_instance_is_left_out_for_other_correlation_ids(cid: str) -> None:
    assert "instance" not in json.loads(problem(409, correlation_id=cid).to_json())


def test_an_explicit_instance_wins() -> None:
    assert problem(409, correlation_id=UUID_CID, instance="/api/customers").instance == "/api/customers"


@pytest.mark.parametrize("pattern", [problems._EMAIL_LIKE, problems._PHONE_LIKE], ids=["email", "phone"])
def test_the_scrubbing_patterns_are_bounded(pattern: re.Pattern[str]) -> None:
    bounds = quantifier_bounds(pattern)
    assert bounds and all(high != UNBOUNDED and high <= 255 for _, high in bounds)


def test_a_long_message_is_scrubbed_of_its_address() -> None:
    message = "value " + "x" * 10_000 + "jane.doe@example.com is not allowed"
    assert "jane.doe" not in safe_message({"type": "value_error", "msg": message})

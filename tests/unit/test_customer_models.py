from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.customers.models import COUNTRY_CODES, CURRENCY_CODES, CreateCustomerRequest

ADDRESS: dict[str, Any] = {
    "Addresstitle": "Home",
    "Street": "1 Microsoft Way",
    "Addresstype": "Billing",
    "PrimaryAddress": "Yes",
    "PostalCode": "98052",
    "City": "Redmond",
    "Country": "United States",
    "CountryCode": "USA",
    "State": "WA",
}
# The partner's example payload (reference/retail-server.md, 6.1), with made-up personal values.
EXAMPLE: dict[str, Any] = {
    "Customer": {
        "LegalEntity": "USRT",
        "FirstName": "Avery",
        "MiddleName": "J",
        "LastName": "Quinn",
        "ContactNumber": "+14255550123",
        "CurrencyCode": "USD",
        "EmailAddress": "avery.quinn@example.com",
        "DateOfBirth": "11/10/1997",
        "Gender": "Male",
        "BillingAddress": [ADDRESS],
        "ShippingAddress": [{**ADDRESS, "Addresstype": "Shipping"}],
    }
}


def payload(**customer: Any) -> dict[str, Any]:
    """The example with some Customer fields replaced (a value of ``...`` removes the field)."""
    body = copy.deepcopy(EXAMPLE)
    for name, value in customer.items():
        if value is ...:
            body["Customer"].pop(name)
        else:
            body["Customer"][name] = value
    return body


def address(**fields: Any) -> dict[str, Any]:
    result = dict(ADDRESS)
    for name, value in fields.items():
        if value is ...:
            result.pop(name)
        else:
            result[name] = value
    return result


def errors_of(body: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        CreateCustomerRequest.model_validate(body)
    return {tuple(error["loc"]): error["type"] for error in caught.value.errors()}


def test_the_documented_example_passes_and_serialises_back_unchanged() -> None:
    request = CreateCustomerRequest.model_validate(EXAMPLE)
    assert request.to_fno_payload() == EXAMPLE
    assert request.customer.first_name == "Avery"
    assert request.customer.billing_addresses[0].is_primary


def test_json_text_validates_too() -> None:
    assert CreateCustomerRequest.model_validate_json(json.dumps(EXAMPLE)).to_fno_payload() == EXAMPLE


def test_absent_optional_fields_are_sent_as_empty_strings_and_gender_none() -> None:
    body = payload(
        MiddleName=...,
        ContactNumber=None,
        DateOfBirth=...,
        Gender=None,
        BillingAddress=...,
        ShippingAddress=None,
    )
    body["Customer"]["BillingAddress"] = [address(Addresstitle=..., PostalCode=None, City=..., State=...)]
    sent = CreateCustomerRequest.model_validate(body).to_fno_payload()["Customer"]
    assert list(sent) == list(EXAMPLE["Customer"])  # every documented key, in the documented order
    assert sent["MiddleName"] == sent["ContactNumber"] == sent["DateOfBirth"] == ""
    assert sent["Gender"] == "None"
    assert sent["ShippingAddress"] == []
    assert sent["BillingAddress"][0] == {
        **ADDRESS,
        "Addresstitle": "",
        "PostalCode": "",
        "City": "",
        "State": "",
    }
    assert None not in sent.values()


def test_text_is_trimmed_and_codes_upper_cased() -> None:
    body = payload(
        LegalEntity=" usrt ",
        FirstName="  Avery ",
        LastName="\tQuinn\n",
        CurrencyCode="usd",
        EmailAddress="  Avery.Quinn@EXAMPLE.com ",
        Gender="female",
        BillingAddress=[
            address(CountryCode=" usa", City=" Redmond ", PrimaryAddress="yes", Addresstype="billing")
        ],
    )
    sent = CreateCustomerRequest.model_validate(body).to_fno_payload()["Customer"]
    assert (sent["LegalEntity"], sent["FirstName"], sent["LastName"]) == ("USRT", "Avery", "Quinn")
    assert sent["CurrencyCode"] == "USD"
    assert sent["EmailAddress"] == "Avery.Quinn@example.com"  # domain normalised, local part kept
    assert sent["Gender"] == "Female"
    billing = sent["BillingAddress"][0]
    assert (billing["CountryCode"], billing["City"]) == ("USA", "Redmond")
    assert (billing["PrimaryAddress"], billing["Addresstype"]) == ("Yes", "Billing")


# ----- required fields


@pytest.mark.parametrize("name", ["LegalEntity", "FirstName", "LastName", "CurrencyCode"])
def test_required_customer_fields(name: str) -> None:
    assert errors_of(payload(**{name: ...}))[("Customer", name)] == "missing"


@pytest.mark.parametrize("name", ["FirstName", "LastName"])
def test_required_names_must_not_be_blank(name: str) -> None:
    assert errors_of(payload(**{name: "   "}))[("Customer", name)] == "string_too_short"


def test_email_or_phone_is_required() -> None:
    assert errors_of(payload(EmailAddress=..., ContactNumber=""))[("Customer",)] == "contact_required"
    CreateCustomerRequest.model_validate(payload(EmailAddress=...))
    CreateCustomerRequest.model_validate(payload(ContactNumber=...))


@pytest.mark.parametrize("name", ["Street", "Addresstype", "PrimaryAddress", "CountryCode"])
def test_required_address_fields(name: str) -> None:
    body = payload(BillingAddress=[address(**{name: ...})])
    assert errors_of(body)[("Customer", "BillingAddress", 0, name)] == "missing"


def test_the_body_must_have_the_customer_object() -> None:
    assert errors_of({})[("Customer",)] == "missing"
    assert errors_of({"Customer": []})[("Customer",)] == "model_type"


# ----- unknown fields


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**EXAMPLE, "Extra": 1}, ("Extra",)),
        (payload(Nickname="Av"), ("Customer", "Nickname")),
        (payload(BillingAddress=[address(Street2="x")]), ("Customer", "BillingAddress", 0, "Street2")),
        (payload(first_name="Avery"), ("Customer", "first_name")),
    ],
)
def test_unknown_fields_are_rejected(body: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert errors_of(body)[loc] == "extra_forbidden"


def test_field_names_are_case_sensitive() -> None:
    body = payload(FirstName=...)
    body["Customer"]["firstName"] = "Avery"
    errors = errors_of(body)
    assert errors[("Customer", "firstName")] == "extra_forbidden"
    assert errors[("Customer", "FirstName")] == "missing"


# ----- email


@pytest.mark.parametrize(
    "email",
    [
        "plainaddress",
        "a@b",
        "a@@example.com",
        "a b@example.com",
        "a@example..com",
        "@example.com",
        "a@localhost",
    ],
)
def test_bad_email_syntax(email: str) -> None:
    assert errors_of(payload(EmailAddress=email))[("Customer", "EmailAddress")] == "email"


def test_email_is_syntax_only_and_allows_plus_and_apostrophe() -> None:
    body = payload(EmailAddress="robin.o'hara+till@no-such-domain-xyz.example")
    sent = CreateCustomerRequest.model_validate(body).customer.email_address
    assert sent == "robin.o'hara+till@no-such-domain-xyz.example"


def test_email_length() -> None:
    long_email = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com"
    assert errors_of(payload(EmailAddress=long_email))[("Customer", "EmailAddress")] == "email"


# ----- phone


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("+14255550123", "+14255550123"),
        ("+1 (425) 555-0123", "+14255550123"),
        ("425.555.0123", "4255550123"),
        ("1234567", "1234567"),
        ("+123456789012345", "+123456789012345"),
    ],
)
def test_phone_numbers_are_normalised(given: str, sent: str) -> None:
    assert CreateCustomerRequest.model_validate(payload(ContactNumber=given)).customer.contact_number == sent


@pytest.mark.parametrize(
    "phone",
    ["123456", "+1234567890123456", "425-555-CALL", "1+4255550123", "++14255550123", "+", "42 55 # 0123"],
)
def test_bad_phone_numbers(phone: str) -> None:
    assert errors_of(payload(ContactNumber=phone))[("Customer", "ContactNumber")] == "phone_number"


def test_phone_input_length_is_capped_before_parsing() -> None:
    assert errors_of(payload(ContactNumber="1" + " " * 40 + "234567"))[("Customer", "ContactNumber")] == (
        "string_too_long"
    )


# ----- codes


@pytest.mark.parametrize("code", ["XXX", "US", "USDD", "XAU", "XTS", "BOV", "12A", "ZWL"])
def test_currency_must_be_a_circulating_iso_4217_code(code: str) -> None:
    assert errors_of(payload(CurrencyCode=code))[("Customer", "CurrencyCode")] == "currency_code"


@pytest.mark.parametrize("code", ["EUR", "gbp", "JPY", "CHF", "XOF"])
def test_common_currencies_pass(code: str) -> None:
    assert (
        CreateCustomerRequest.model_validate(payload(CurrencyCode=code)).customer.currency_code
        == code.upper()
    )


@pytest.mark.parametrize("code", ["US", "XXX", "UK", "EU", "U5A", "USAA"])
def test_country_code_must_be_iso_3166_alpha_3(code: str) -> None:
    body = payload(ShippingAddress=[address(Addresstype="Shipping", CountryCode=code)])
    assert errors_of(body)[("Customer", "ShippingAddress", 0, "CountryCode")] == "country_code"


def test_code_lists_have_their_expected_sizes() -> None:
    assert len(COUNTRY_CODES) == 249
    assert {"USA", "DEU", "GBR", "UKR", "FRA", "CAN", "NLD"} <= COUNTRY_CODES
    assert {"USD", "EUR", "GBP", "CAD", "DKK", "CHF", "XCG"} <= CURRENCY_CODES
    assert all(
        len(code) == 3 and code.isalpha() and code.isupper() for code in CURRENCY_CODES | COUNTRY_CODES
    )


@pytest.mark.parametrize("entity", ["USRTX", "US-R", "", "U S"])
def test_legal_entity_is_an_fno_company_id(entity: str) -> None:
    assert errors_of(payload(LegalEntity=entity))[("Customer", "LegalEntity")] == "legal_entity"


# ----- date of birth


def test_date_of_birth_single_digits_are_padded() -> None:
    body = payload(DateOfBirth="1/5/1990")
    assert CreateCustomerRequest.model_validate(body).customer.date_of_birth == "01/05/1990"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("1997-11-10", "date_format"),
        ("11/10/97", "date_format"),
        ("11.10.1997", "date_format"),
        ("Nov 10 97", "date_format"),
        ("10/11/19970", "string_too_long"),
        ("13/10/1997", "date_invalid"),
        ("02/30/2000", "date_invalid"),
        ("02/29/2023", "date_invalid"),
        ("00/10/1997", "date_invalid"),
        ("12/31/1899", "date_too_old"),
    ],
)
def test_bad_dates_of_birth(value: str, kind: str) -> None:
    assert errors_of(payload(DateOfBirth=value))[("Customer", "DateOfBirth")] == kind


def test_leap_day_and_earliest_date_pass() -> None:
    for value in ("02/29/2000", "01/01/1900"):
        CreateCustomerRequest.model_validate(payload(DateOfBirth=value))


def test_date_of_birth_must_not_be_in_the_future() -> None:
    today = datetime.now(UTC).date()
    in_two_days = (today + timedelta(days=2)).strftime("%m/%d/%Y")
    next_year = today.replace(year=today.year + 1, day=min(today.day, 28)).strftime("%m/%d/%Y")
    for value in (in_two_days, next_year):
        assert errors_of(payload(DateOfBirth=value))[("Customer", "DateOfBirth")] == "date_future"
    CreateCustomerRequest.model_validate(payload(DateOfBirth=today.strftime("%m/%d/%Y")))


def test_date_of_birth_tolerates_one_day_past_the_utc_date() -> None:
    # A till ahead of UTC can be on the next day already; docs/reference/http-api.md documents this tolerance.
    today = datetime.now(UTC).date()
    tomorrow = (today + timedelta(days=1)).strftime("%m/%d/%Y")
    CreateCustomerRequest.model_validate(payload(DateOfBirth=tomorrow))


# ----- gender


@pytest.mark.parametrize(
    ("given", "sent"), [("Male", "Male"), ("FEMALE", "Female"), ("nonspecific", "NonSpecific")]
)
def test_gender_values(given: str, sent: str) -> None:
    assert CreateCustomerRequest.model_validate(payload(Gender=given)).customer.gender == sent


@pytest.mark.parametrize("gender", ["M", "Other", "Non-specific", "0"])
def test_bad_gender(gender: str) -> None:
    assert errors_of(payload(Gender=gender))[("Customer", "Gender")] == "gender"


# ----- addresses


def test_address_type_must_match_its_list() -> None:
    body = payload(
        BillingAddress=[address(), address(Addresstype="Shipping", PrimaryAddress="No")],
        ShippingAddress=[address(Addresstype="Billing")],
    )
    errors = errors_of(body)
    assert errors[("Customer", "BillingAddress", 1, "Addresstype")] == "address_type"
    assert errors[("Customer", "ShippingAddress", 0, "Addresstype")] == "address_type"
    assert ("Customer", "BillingAddress", 0, "Addresstype") not in errors


@pytest.mark.parametrize("value", ["Y", "true", "", "Primary"])
def test_primary_address_is_yes_or_no(value: str) -> None:
    body = payload(BillingAddress=[address(PrimaryAddress=value)])
    assert errors_of(body)[("Customer", "BillingAddress", 0, "PrimaryAddress")] == "yes_no"


def test_primary_address_must_be_a_string() -> None:
    body = payload(BillingAddress=[address(PrimaryAddress=True)])
    assert errors_of(body)[("Customer", "BillingAddress", 0, "PrimaryAddress")] == "string_type"


def test_at_most_one_primary_address_per_list() -> None:
    body = payload(BillingAddress=[address(), address(PrimaryAddress="NO"), address(PrimaryAddress="yes")])
    assert errors_of(body)[("Customer", "BillingAddress")] == "primary_address"
    # One primary in each list is fine, and so is none.
    CreateCustomerRequest.model_validate(payload(BillingAddress=[address(PrimaryAddress="No")] * 2))


def test_address_lists_are_capped() -> None:
    body = payload(BillingAddress=[address(PrimaryAddress="No")] * 11)
    assert errors_of(body)[("Customer", "BillingAddress")] == "too_long"


def test_street_may_span_lines_but_other_text_may_not() -> None:
    body = payload(BillingAddress=[address(Street="1 Microsoft Way\r\nBuilding 92")])
    street = CreateCustomerRequest.model_validate(body).customer.billing_addresses[0].street
    assert street == "1 Microsoft Way\nBuilding 92"
    assert (
        errors_of(payload(BillingAddress=[address(City="Red\nmond")]))[
            ("Customer", "BillingAddress", 0, "City")
        ]
        == "control_characters"
    )
    assert errors_of(payload(FirstName="Av\x00ery"))[("Customer", "FirstName")] == "control_characters"
    body = payload(BillingAddress=[address(Street="1 Way\x07")])
    assert errors_of(body)[("Customer", "BillingAddress", 0, "Street")] == "control_characters"


# ----- lengths


@pytest.mark.parametrize(
    ("name", "limit"),
    [("FirstName", 25), ("MiddleName", 25), ("LastName", 25)],
)
def test_customer_text_lengths(name: str, limit: int) -> None:
    CreateCustomerRequest.model_validate(payload(**{name: "x" * limit}))
    assert errors_of(payload(**{name: "x" * (limit + 1)}))[("Customer", name)] == "string_too_long"


@pytest.mark.parametrize(
    ("name", "limit"),
    [("Addresstitle", 60), ("Street", 250), ("PostalCode", 10), ("City", 60), ("Country", 60), ("State", 10)],
)
def test_address_text_lengths(name: str, limit: int) -> None:
    CreateCustomerRequest.model_validate(payload(BillingAddress=[address(**{name: "x" * limit})]))
    body = payload(BillingAddress=[address(**{name: "x" * (limit + 1)})])
    assert errors_of(body)[("Customer", "BillingAddress", 0, name)] == "string_too_long"


def test_lengths_count_after_trimming() -> None:
    CreateCustomerRequest.model_validate(payload(FirstName="  " + "x" * 25 + "  "))


# ----- types


@pytest.mark.parametrize(
    ("name", "value"),
    [("FirstName", 12), ("ContactNumber", 4255550123), ("BillingAddress", {"Street": "x"}), ("Gender", 1)],
)
def test_wrong_json_types_are_rejected(name: str, value: Any) -> None:
    assert ("Customer", name) in errors_of(payload(**{name: value}))


def test_the_model_is_immutable() -> None:
    request = CreateCustomerRequest.model_validate(EXAMPLE)
    with pytest.raises(ValidationError):
        request.customer.first_name = "Other"  # type: ignore[misc]

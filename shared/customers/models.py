"""The request body of ``POST /api/customers``: the partner's CreateCustomer payload, validated.

The shape is exactly the partner's example (reference/retail-server.md, 6.1)::

    {"Customer": {"LegalEntity", "FirstName", "MiddleName", "LastName", "ContactNumber",
                  "CurrencyCode", "EmailAddress", "DateOfBirth", "Gender",
                  "BillingAddress": [address], "ShippingAddress": [address]}}
    address = {"Addresstitle", "Street", "Addresstype", "PrimaryAddress", "PostalCode", "City",
               "Country", "CountryCode", "State"}

Field names are the wire names (aliases) and are case-sensitive; unknown fields are refused.

Rules
-----
- Required: ``LegalEntity``, ``FirstName``, ``LastName``, ``CurrencyCode``, and at least one of
  ``EmailAddress`` / ``ContactNumber`` (a customer the store cannot reach is of no use to it). In an
  address: ``Street``, ``Addresstype``, ``PrimaryAddress`` and ``CountryCode``. Both address lists
  may be empty or absent. ``null`` counts as absent.
- Text is trimmed; control characters are refused (a line break is allowed in ``Street`` only).
- ``LegalEntity``, ``CurrencyCode`` and ``CountryCode`` are upper-cased. ``LegalEntity`` is 1-4
  letters or digits; ``CurrencyCode`` is a circulating ISO 4217 currency (:data:`CURRENCY_CODES`:
  no fund, metal or test codes); ``CountryCode`` is ISO 3166-1 alpha-3 (:data:`COUNTRY_CODES`).
- ``EmailAddress``: syntax only (email-validator, no DNS); sent in its normalised form.
- ``ContactNumber``: an optional leading ``+`` then 7-15 digits (E.164 allows at most 15); spaces,
  dashes, dots and parentheses are accepted and stripped, so F&O stores ``+14255550100``.
- ``DateOfBirth``: ``MM/DD/YYYY`` (a one-digit month or day is accepted and zero-padded), a real
  date, not before 01/01/1900 and not after today (UTC, plus one day for time zones ahead of UTC).
- ``Gender``: one of F&O's ``Gender`` enum symbols ``Male``, ``Female``, ``NonSpecific``, ``None``,
  matched case-insensitively and sent in that spelling.
- ``Addresstype``: ``Billing`` in ``BillingAddress``, ``Shipping`` in ``ShippingAddress``
  (case-insensitive). ``PrimaryAddress``: ``Yes`` or ``No`` (case-insensitive), at most one
  ``Yes`` per list. At most 10 addresses per list.

Length limits, from the F&O extended data types that store the values:

=================  =====  =================================================
field              max    F&O type
=================  =====  =================================================
LegalEntity        4      DataAreaId
FirstName          25     FirstName (DirPersonName)
MiddleName         25     MiddleName (DirPersonName)
LastName           25     LastName (DirPersonName)
EmailAddress       254    RFC 5321 path limit (LogisticsElectronicAddressLocator holds 255)
ContactNumber      16     E.164: ``+`` and 15 digits, after stripping (input up to 32)
CurrencyCode       3      CurrencyCode
DateOfBirth        10     ``MM/DD/YYYY``
Addresstitle       60     LogisticsLocation description (Description, 60)
Street             250    LogisticsAddressStreet
PostalCode         10     LogisticsAddressZipCodeId
City               60     LogisticsAddressCityName
Country            60     country/region name (LogisticsAddressCountryRegionName)
CountryCode        3      LogisticsAddressCountryRegionId (ISO alpha-3)
State              10     LogisticsAddressStateId
=================  =====  =================================================

What F&O receives
-----------------
:meth:`CreateCustomerRequest.to_fno_payload` sends every documented key, always: optional text
that the caller left out goes as ``""`` and a missing ``Gender`` as ``"None"``. The partner's
example carries every key; X++ data contracts treat an empty string as "not given"; and ``"None"``
is the enum's own empty value, which parses whether the contract declares ``Gender`` as the enum
or as a string, where ``""`` would not parse as the enum. Nothing is ever sent as JSON ``null``.

Error messages never quote the rejected value, so problem details built from them cannot echo
personal data.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Circulating ISO 4217 currencies (2025 list). ANG (replaced by XCG in 2025) and BGN (euro from
# 2026) stay while F&O environments still hold them; SLL, ZWL and other withdrawn codes are out.
CURRENCY_CODES: Final = _codes(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
    GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW
    KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
    NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
    SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS
    VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """
)

# ISO 3166-1 alpha-3: all 249 officially assigned codes.
COUNTRY_CODES: Final = _codes(
    """
    ABW AFG AGO AIA ALA ALB AND ARE ARG ARM ASM ATA ATF ATG AUS AUT AZE BDI BEL BEN BES BFA BGD BGR
    BHR BHS BIH BLM BLR BLZ BMU BOL BRA BRB BRN BTN BVT BWA CAF CAN CCK CHE CHL CHN CIV CMR COD COG
    COK COL COM CPV CRI CUB CUW CXR CYM CYP CZE DEU DJI DMA DNK DOM DZA ECU EGY ERI ESH ESP EST ETH
    FIN FJI FLK FRA FRO FSM GAB GBR GEO GGY GHA GIB GIN GLP GMB GNB GNQ GRC GRD GRL GTM GUF GUM GUY
    HKG HMD HND HRV HTI HUN IDN IMN IND IOT IRL IRN IRQ ISL ISR ITA JAM JEY JOR JPN KAZ KEN KGZ KHM
    KIR KNA KOR KWT LAO LBN LBR LBY LCA LIE LKA LSO LTU LUX LVA MAC MAF MAR MCO MDA MDG MDV MEX MHL
    MKD MLI MLT MMR MNE MNG MNP MOZ MRT MSR MTQ MUS MWI MYS MYT NAM NCL NER NFK NGA NIC NIU NLD NOR
    NPL NRU NZL OMN PAK PAN PCN PER PHL PLW PNG POL PRI PRK PRT PRY PSE PYF QAT REU ROU RUS RWA SAU
    SDN SEN SGP SGS SHN SJM SLB SLE SLV SMR SOM SPM SRB SSD STP SUR SVK SVN SWE SWZ SXM SYC SYR TCA
    TCD TGO THA TJK TKL TKM TLS TON TTO TUN TUR TUV TWN TZA UGA UKR UMI URY USA UZB VAT VCT VEN VGB
    VIR VNM VUT WLF WSM YEM ZAF ZMB ZWE
    """
)

GENDERS: Final = ("Male", "Female", "NonSpecific", "None")
NO_GENDER: Final = "None"
DATE_OF_BIRTH_FORMAT: Final = "MM/DD/YYYY"
EARLIEST_DATE_OF_BIRTH: Final = date(1900, 1, 1)
MAX_ADDRESSES_PER_LIST: Final = 10
MIN_PHONE_DIGITS: Final = 7
MAX_PHONE_DIGITS: Final = 15

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_LEGAL_ENTITY = re.compile(r"[A-Z0-9]{1,4}")
_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
_PHONE = re.compile(r"\+?[0-9]+")
_DATE = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _absent_as_empty(value: Any) -> Any:
    return "" if value is None else value


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise _error("control_characters", "must not contain control characters or line breaks")
    return value


def _no_control_but_newline(value: str) -> str:
    # Street is multi-line in F&O; normalise Windows line ends so the limit counts what is stored.
    value = value.replace("\r\n", "\n")
    if _CONTROL_BUT_NEWLINE.search(value):
        raise _error("control_characters", "must not contain control characters other than line breaks")
    return value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _legal_entity(value: str) -> str:
    if not _LEGAL_ENTITY.fullmatch(value):
        raise _error("legal_entity", "must be an F&O company id: 1 to 4 letters or digits")
    return value


def _currency(value: str) -> str:
    if value not in CURRENCY_CODES:
        raise _error("currency_code", "must be an ISO 4217 currency code such as USD or EUR")
    return value


def _country(value: str) -> str:
    if value not in COUNTRY_CODES:
        raise _error("country_code", "must be an ISO 3166-1 alpha-3 country code such as USA or DEU")
    return value


def _email(value: str) -> str:
    if value == "":
        return value
    # email-validator compiles its grammar on import (about 20 ms): loaded with the first address.
    import email_validator

    try:
        checked = email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError:
        # The library's reason can quote part of the address; keep it out of the message.
        raise _error("email", "must be a valid email address: a local part, one @ and a domain") from None
    if len(checked.normalized) > 254:
        raise _error("email", "must be at most 254 characters")
    return checked.normalized


def _phone(value: str) -> str:
    if value == "":
        return value
    compact = _PHONE_SEPARATORS.sub("", value)
    digits = compact.lstrip("+")
    if not _PHONE.fullmatch(compact) or not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        raise _error(
            "phone_number",
            f"must be {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits with an optional leading +; "
            "spaces, dashes, dots and parentheses are allowed",
        )
    return compact


def _date_of_birth(value: str) -> str:
    if value == "":
        return value
    match = _DATE.fullmatch(value)
    if match is None:
        raise _error("date_format", f"must be a date as {DATE_OF_BIRTH_FORMAT}")
    month, day, year = (int(part) for part in match.groups())
    try:
        born = date(year, month, day)
    except ValueError:
        raise _error("date_invalid", f"must be a real calendar date as {DATE_OF_BIRTH_FORMAT}") from None
    # The latest date anywhere on earth is one day past the UTC date.
    latest = datetime.now(UTC).date() + timedelta(days=1)
    if born > latest:
        raise _error("date_future", "must not be in the future")
    if born < EARLIEST_DATE_OF_BIRTH:
        raise _error("date_too_old", "must not be before 01/01/1900")
    return born.strftime("%m/%d/%Y")


def _gender(value: str) -> str:
    if value == "":
        return NO_GENDER
    for name in GENDERS:
        if value.casefold() == name.casefold():
            return name
    raise _error("gender", "must be one of " + ", ".join(GENDERS))


def _yes_no(value: str) -> str:
    if value.casefold() in ("yes", "no"):
        return value.capitalize()
    raise _error("yes_no", "must be Yes or No")


_Absent = BeforeValidator(_absent_as_empty)

Name = Annotated[str, Field(min_length=1, max_length=25), AfterValidator(_no_control)]
OptionalName = Annotated[str, Field(max_length=25), _Absent, AfterValidator(_no_control)]


OptionalText10 = Annotated[str, Field(max_length=10), _Absent, AfterValidator(_no_control)]
OptionalText60 = Annotated[str, Field(max_length=60), _Absent, AfterValidator(_no_control)]


class _Wire(BaseModel):
    # Wire names only (no population by Python name), so the accepted shape is exactly the payload.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Address(_Wire):
    """One address; :class:`BillingAddress` and :class:`ShippingAddress` pin ``Addresstype``."""

    address_type_in_list: ClassVar[str] = ""

    title: OptionalText60 = Field(default="", alias="Addresstitle")
    street: Annotated[str, Field(min_length=1, max_length=250), AfterValidator(_no_control_but_newline)] = (
        Field(alias="Street")
    )
    address_type: str = Field(alias="Addresstype")
    primary: Annotated[str, AfterValidator(_yes_no)] = Field(alias="PrimaryAddress")
    postal_code: OptionalText10 = Field(default="", alias="PostalCode")
    city: OptionalText60 = Field(default="", alias="City")
    country: OptionalText60 = Field(default="", alias="Country")
    country_code: Annotated[str, BeforeValidator(_upper), AfterValidator(_country)] = Field(
        alias="CountryCode"
    )
    state: OptionalText10 = Field(default="", alias="State")

    @field_validator("address_type")
    @classmethod
    def _type_matches_list(cls, value: str) -> str:
        expected = cls.address_type_in_list
        if expected and value.casefold() != expected.casefold():
            raise _error("address_type", f"must be {expected} in the {expected}Address list")
        return expected or value

    @property
    def is_primary(self) -> bool:
        return self.primary == "Yes"


class BillingAddress(Address):
    address_type_in_list: ClassVar[str] = "Billing"


class ShippingAddress(Address):
    address_type_in_list: ClassVar[str] = "Shipping"


def _one_primary(addresses: list[Any]) -> list[Any]:
    primaries = [index for index, address in enumerate(addresses) if address.is_primary]
    if len(primaries) > 1:
        raise _error(
            "primary_address",
            "at most one address per list may have PrimaryAddress Yes; items "
            + ", ".join(str(index) for index in primaries)
            + " do",
        )
    return addresses


def _list_or_empty(value: Any) -> Any:
    return [] if value is None else value


class NewCustomer(_Wire):
    """The ``Customer`` object."""

    legal_entity: Annotated[str, BeforeValidator(_upper), AfterValidator(_legal_entity)] = Field(
        alias="LegalEntity"
    )
    first_name: Name = Field(alias="FirstName")
    middle_name: OptionalName = Field(default="", alias="MiddleName")
    last_name: Name = Field(alias="LastName")
    contact_number: Annotated[str, Field(max_length=32), _Absent, AfterValidator(_phone)] = Field(
        default="", alias="ContactNumber"
    )
    currency_code: Annotated[str, BeforeValidator(_upper), AfterValidator(_currency)] = Field(
        alias="CurrencyCode"
    )
    email_address: Annotated[str, Field(max_length=320), _Absent, AfterValidator(_email)] = Field(
        default="", alias="EmailAddress"
    )
    date_of_birth: Annotated[str, Field(max_length=10), _Absent, AfterValidator(_date_of_birth)] = Field(
        default="", alias="DateOfBirth"
    )
    gender: Annotated[str, Field(max_length=20), _Absent, AfterValidator(_gender)] = Field(
        default=NO_GENDER, alias="Gender"
    )
    billing_addresses: Annotated[
        list[BillingAddress],
        BeforeValidator(_list_or_empty),
        Field(max_length=MAX_ADDRESSES_PER_LIST),
        AfterValidator(_one_primary),
    ] = Field(default_factory=list, alias="BillingAddress")
    shipping_addresses: Annotated[
        list[ShippingAddress],
        BeforeValidator(_list_or_empty),
        Field(max_length=MAX_ADDRESSES_PER_LIST),
        AfterValidator(_one_primary),
    ] = Field(default_factory=list, alias="ShippingAddress")

    @model_validator(mode="after")
    def _reachable(self) -> NewCustomer:
        if not self.email_address and not self.contact_number:
            raise _error("contact_required", "give EmailAddress or ContactNumber (or both)")
        return self


class CreateCustomerRequest(_Wire):
    """The whole body: ``{"Customer": {...}}``."""

    customer: NewCustomer = Field(alias="Customer")

    def to_fno_payload(self) -> dict[str, Any]:
        """The body for F&O's CreateCustomer: the same shape, every key present, no ``null``."""
        return self.model_dump(mode="json", by_alias=True)

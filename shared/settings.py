"""The app-settings contract: one typed object read from app settings (environment), validated once.

Every field maps to the app setting of the same name in upper case (``retail_server_url`` is
``RETAIL_SERVER_URL``). Each one is documented in docs/reference/settings.md, has a safe local
value in ``local.settings.sample.json`` and, where Azure needs it, is wired in ``infra/app/api.bicep``.
Secrets are never settings: a setting only *names* a secret (see ``shared/secrets.py``).
"""

from __future__ import annotations

import json
import re
import string
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_NCRONTAB_FIELDS = 6
_OUN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# The queue message's step is at most 20 (shared/abandoned_carts/messages.py).
MAX_REMINDER_STEPS = 20
# Microsoft's abandoned-cart sample's defaults: small, medium and large screens; large is the <img>.
DEFAULT_IMAGE_VIEWPORTS: tuple[dict[str, Any], ...] = (
    {"media": "(max-width:768px)", "width": 80, "height": 80, "default": False},
    {"media": "(min-width:769px) and (max-width:1599px)", "width": 183, "height": 183, "default": False},
    {"media": "(min-width:1600px)", "width": 315, "height": 315, "default": True},
)


class SettingsError(ValueError):
    """A missing or invalid app setting, named in the message."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset_everywhere(cls, values: object) -> object:
        # An app setting left empty (the portal, Bicep, local.settings.json) means "not set", for
        # every setting alike: an optional one takes its default, a required one is reported
        # missing by name. Read as a value, "" would be a path to the current folder, a zero-length
        # name or URL, or a parse error, depending on the field's type.
        if not isinstance(values, dict):
            return values
        return {
            name: value
            for name, value in values.items()
            if not (isinstance(value, str) and value.strip() == "")
        }

    # --- core -------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The share of traces exported to Application Insights (shared/telemetry.py reads it when the
    # app starts); log records and metrics are never sampled.
    telemetry_sampling_percentage: int = Field(default=100, ge=1, le=100)
    key_vault_url: str | None = None
    secret_cache_ttl_seconds: int = Field(default=300, ge=0, le=86_400)
    # Every Key Vault read: the read timeout of one attempt (connect: at most
    # HTTP_CONNECT_TIMEOUT_SECONDS), and the attempts, retrying timeouts, 429 and 5xx.
    key_vault_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    key_vault_max_attempts: int = Field(default=3, ge=1, le=10)

    entra_tenant_id: str = Field(min_length=1)
    entra_authority_host: str = "https://login.microsoftonline.com"
    entra_client_id: str = Field(min_length=1)
    entra_client_secret_name: str = Field(default="entra-client-secret", min_length=1)
    # How the app proves itself to Entra ID for Retail Server and F&O tokens: ``secret`` (the
    # client secret named above) or ``federated`` (a token of the app's user-assigned managed
    # identity, which the app registration trusts as a federated identity credential: no secret).
    entra_credential: Literal["secret", "federated"] = "secret"
    # The client id of the function app's user-assigned managed identity (azure-identity's own
    # variable, set by the Bicep); ``federated`` presents that identity's tokens.
    azure_client_id: str | None = Field(default=None, max_length=120)

    http_timeout_seconds: float = Field(default=30.0, gt=0, le=230)
    http_connect_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    http_max_attempts: int = Field(default=4, ge=1, le=10)
    http_backoff_base_seconds: float = Field(default=0.5, ge=0, le=30)
    http_backoff_max_seconds: float = Field(default=30.0, ge=0, le=300)
    # The largest upstream response body read; a larger one fails its call, naming this setting.
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=65_536, le=64 * 1024 * 1024)
    extra_ca_bundle: Path | None = None

    state_store: Literal["sqlite", "cosmos"] = "sqlite"
    sqlite_path: Path = Path(".state/connector.sqlite3")
    cosmos_endpoint: str | None = None
    cosmos_database: str = "commerce-connector"
    cosmos_ledger_container: str = "ledger"
    cosmos_state_container: str = "state"
    # Every Cosmos DB request: its read timeout (connect: at most HTTP_CONNECT_TIMEOUT_SECONDS),
    # and the attempts per operation; an operation gives up after their product.
    cosmos_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    cosmos_max_attempts: int = Field(default=3, ge=1, le=10)

    # --- Retail Server (Commerce Scale Unit) ----------------------------------------------
    retail_server_url: str = Field(min_length=1)
    retail_server_audience: str = "https://commerce.dynamics.com"
    retail_server_api_version: str = "7.3"
    operating_unit_numbers: Annotated[list[str], NoDecode] = Field(min_length=1)

    # --- abandoned-cart detection -----------------------------------------------------------
    detect_schedule: str = "0 */15 * * * *"
    lookback_minutes: int = Field(default=1440, ge=1, le=60 * 24 * 30)
    abandoned_after_minutes: int = Field(default=60, ge=1, le=60 * 24 * 7)
    max_carts_per_run: int = Field(default=2000, ge=1, le=100_000)
    # At most 200: a page must fit under MAX_RESPONSE_BYTES (docs/reference/settings.md, "Detection").
    cart_page_size: int = Field(default=100, ge=1, le=200)
    detection_queue_name: str = Field(default="abandoned-carts", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")

    # --- notification (shared/abandoned_carts) -------------------------------------------
    # Who may get an abandoned-cart email (docs/explanation/consent-and-privacy.md): opted_in,
    # not_opted_out, or off (off only for transactional use; the suppression list and blocked
    # customers still apply).
    consent_policy: Literal["opted_in", "not_opted_out", "off"] = "not_opted_out"
    # At most one abandoned-cart sequence per customer in this many hours; 0 turns the cap off.
    frequency_cap_hours: int = Field(default=24, ge=0, le=24 * 30)
    # Skip a cart whose customer placed an order since the cart last changed (SalesOrders/SearchOrders).
    order_check: bool = True
    # Minutes after the cart's last change at which each reminder step is due, e.g. "60,1440".
    reminder_steps: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [60])
    # Concurrent invocations share one customer and one product lookup per window.
    coalesce_window_ms: int = Field(default=25, ge=0, le=1000)
    product_cache_ttl_seconds: int = Field(default=600, ge=0, le=86_400)
    channel_cache_ttl_seconds: int = Field(default=3600, ge=0, le=86_400)
    # The storefront: product pages are {SITE_URL}/{name-slug}/{RecordId}.p
    site_url: str | None = None
    # Placeholders {cartId}, {oun}, {channelId}; values are URL-encoded.
    return_to_cart_url_template: str | None = None
    # Placeholders {customerId}, {cartId}, {oun}, {channelId}, {unsubscribeToken}; unset: no link.
    unsubscribe_url_template: str | None = None
    # Media Server Base URL of the channel profile; relative image paths are appended to it.
    image_base_url: str | None = None
    # JSON list of {"media", "width", "height", "default"}: one resized image per viewport.
    image_viewports: Annotated[list[dict[str, Any]], NoDecode] = Field(
        default_factory=lambda: [dict(v) for v in DEFAULT_IMAGE_VIEWPORTS]
    )

    @field_validator("reminder_steps", mode="before")
    @classmethod
    def _parse_reminder_steps(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("reminder_steps")
    @classmethod
    def _check_reminder_steps(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("needs at least one step (minutes after the cart's last change)")
        if len(value) > MAX_REMINDER_STEPS:
            raise ValueError(f"at most {MAX_REMINDER_STEPS} steps")
        if any(minutes < 1 for minutes in value):
            raise ValueError("each step is a whole number of minutes, at least 1")
        if value != sorted(set(value)):
            raise ValueError("steps must be strictly increasing, e.g. 60,1440")
        if value[-1] > 60 * 24 * 30:
            raise ValueError("the last step must be at most 30 days (43200 minutes) after the change")
        return value

    @field_validator("site_url", "image_base_url")
    @classmethod
    def _check_notify_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if not value.startswith(("https://", "http://")) or len(value.split("://", 1)[1]) == 0:
            raise ValueError("must be an http(s):// URL")
        return value

    @field_validator("return_to_cart_url_template", "unsubscribe_url_template")
    @classmethod
    def _check_url_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL template")
        allowed = (
            {"cartId", "oun", "channelId"}
            if info.field_name == "return_to_cart_url_template"
            else {"customerId", "cartId", "oun", "channelId", "unsubscribeToken"}
        )
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
        except ValueError as exc:
            raise ValueError(
                f"is not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
            ) from None
        unknown = sorted({field for field in fields if field not in allowed})
        if unknown:
            raise ValueError(f"uses unknown placeholder(s) {unknown}; allowed: {sorted(allowed)}")
        if info.field_name == "return_to_cart_url_template" and "cartId" not in fields:
            raise ValueError("must contain {cartId}, so each email links to its own cart")
        return value

    @field_validator("image_viewports", mode="before")
    @classmethod
    def _parse_image_viewports(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON list of {media, width, height, default}") from None
        return value

    @field_validator("image_viewports")
    @classmethod
    def _check_image_viewports(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not value:
            raise ValueError("needs at least one viewport")
        checked: list[dict[str, Any]] = []
        for index, viewport in enumerate(value):
            unknown = set(viewport) - {"media", "width", "height", "default"}
            if unknown:
                raise ValueError(f"viewport {index} has unknown key(s) {sorted(unknown)}")
            media, width, height = viewport.get("media"), viewport.get("width"), viewport.get("height")
            default = viewport.get("default", False)
            if not isinstance(media, str) or not media.strip():
                raise ValueError(f"viewport {index} needs a CSS media query in 'media'")
            for name, size in (("width", width), ("height", height)):
                if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 3000:
                    raise ValueError(f"viewport {index}: '{name}' must be a whole number of pixels, 0-3000")
            if not isinstance(default, bool):
                raise ValueError(f"viewport {index}: 'default' must be true or false")
            checked.append({"media": media.strip(), "width": width, "height": height, "default": default})
        if sum(1 for viewport in checked if viewport["default"]) != 1:
            raise ValueError("exactly one viewport must be the default (the <img> fallback)")
        return checked

    @model_validator(mode="after")
    def _check_notify(self) -> Settings:
        # The host names the poison queue <queue>-poison; it must still be a valid queue name.
        if len(self.detection_queue_name) > 63 - len("-poison"):
            raise ValueError("DETECTION_QUEUE_NAME must be at most 56 characters (its poison queue adds 7)")
        return self

    # --- end notify --------------------------------------------------------------------------

    # --- email providers (shared/email) ------------------------------------------------------
    # Which provider sends; DRY_RUN=true forces the preview whatever EMAIL_PROVIDER says.
    email_provider: Literal["emarsys", "sendgrid", "webhook", "preview"] = "preview"
    dry_run: bool = False
    preview_dir: Path = Path("out/previews")

    # Emarsys: OAuth 2.0 client credentials (v3) by default; WSSE (v2) until its end-of-2026 sunset.
    emarsys_auth: Literal["oauth", "wsse"] = "oauth"
    emarsys_api_url: str = "https://api.emarsys.net"
    emarsys_auth_url: str = "https://auth.emarsys.net"
    emarsys_event_id: int | None = Field(default=None, ge=1)
    # Contact field that identifies the recipient: 3 is the system field E-Mail.
    emarsys_key_id: str = Field(default="3", pattern=r"^[A-Za-z0-9_]{1,64}$")
    emarsys_client_id_secret_name: str = Field(default="emarsys-client-id", min_length=1)
    emarsys_client_secret_name: str = Field(default="emarsys-client-secret", min_length=1)
    emarsys_wsse_user_secret_name: str = Field(default="emarsys-wsse-user", min_length=1)
    emarsys_wsse_secret_name: str = Field(default="emarsys-wsse-secret", min_length=1)
    emarsys_create_missing_contacts: bool = False

    # SendGrid v3 Mail Send with a dynamic template.
    sendgrid_api_url: str = "https://api.sendgrid.com"
    sendgrid_api_key_secret_name: str = Field(default="sendgrid-api-key", min_length=1)
    sendgrid_template_id: str | None = None
    sendgrid_from_email: str | None = None
    sendgrid_from_name: str | None = None
    sendgrid_unsubscribe_group_id: int | None = Field(default=None, ge=1)

    # Generic signed webhook (Standard Webhooks headers).
    webhook_url: str | None = None
    webhook_signing_secret_name: str = Field(default="webhook-signing-secret", min_length=1)

    @field_validator("emarsys_api_url", "emarsys_auth_url", "sendgrid_api_url", "webhook_url")
    @classmethod
    def _check_email_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: object) -> object:
        # logging_setup accepts "debug" as well; the settings must agree with it.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("sendgrid_template_id", "sendgrid_from_email", "sendgrid_from_name")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None

    @model_validator(mode="after")
    def _check_email_provider(self) -> Settings:
        provider = self.effective_email_provider
        if provider == "emarsys" and self.emarsys_event_id is None:
            raise ValueError(
                "EMARSYS_EVENT_ID is required when EMAIL_PROVIDER is emarsys: the numeric id of the "
                "external event (GET /api/v2/event lists them)"
            )
        if provider == "sendgrid":
            if not self.sendgrid_template_id or not self.sendgrid_template_id.startswith("d-"):
                raise ValueError(
                    "SENDGRID_TEMPLATE_ID must name a dynamic template (an id starting with 'd-') "
                    "when EMAIL_PROVIDER is sendgrid"
                )
            if not self.sendgrid_from_email or "@" not in self.sendgrid_from_email:
                raise ValueError("SENDGRID_FROM_EMAIL is required when EMAIL_PROVIDER is sendgrid")
        if provider == "webhook" and not self.webhook_url:
            raise ValueError("WEBHOOK_URL is required when EMAIL_PROVIDER is webhook")
        return self

    @property
    def effective_email_provider(self) -> Literal["emarsys", "sendgrid", "webhook", "preview"]:
        return "preview" if self.dry_run else self.email_provider

    # --- end email providers -------------------------------------------------------------------

    # --- customers (shared/customers, shared/finance_ops) ------------------------------------
    # The F&O environment URL; unset means POST /api/customers answers 503 "not configured".
    fno_url: str | None = None
    fno_create_customer_path: str = (
        "/api/services/CreateCustomerServiceGroup/CreateCustomerService/CreateCustomer"
    )
    fno_customers_entity: str = Field(default="CustomersV3", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    # A separate Entra app for F&O; unset reuses ENTRA_CLIENT_ID, its secret and token provider.
    fno_client_id: str | None = None
    fno_client_secret_name: str = Field(default="fno-client-secret", min_length=1)
    # The till waits: few attempts and short waits, whatever the background settings say.
    fno_timeout_seconds: float = Field(default=25.0, gt=0, le=230)
    fno_max_attempts: int = Field(default=2, ge=1, le=5)
    fno_max_retry_wait_seconds: float = Field(default=5.0, ge=0, le=60)
    easy_auth_enabled: bool = False
    customers_app_role: str = Field(default="Customers.Create", min_length=1, max_length=120)
    idempotency_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)
    duplicate_check_enabled: bool = False
    cpos_url: str | None = None
    customer_max_body_bytes: int = Field(default=32_768, ge=1024, le=1_048_576)

    @field_validator("fno_url", "cpos_url")
    @classmethod
    def _check_customer_urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL")
        if "?" in value or "#" in value:
            raise ValueError("must not carry a query or fragment")
        value = value.rstrip("/")
        # Cloud POS links append "/POS" themselves; a CPOS_URL copied from the browser ends in it.
        path = value[len("https://") :].partition("/")[2]
        if info.field_name == "cpos_url" and path and value.lower().endswith("/pos"):
            value = value[: -len("/pos")]
        return value

    @field_validator("fno_create_customer_path")
    @classmethod
    def _check_fno_path(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", value):
            raise ValueError("must be a path such as /api/services/<group>/<service>/<operation>")
        return value

    @field_validator("fno_client_id")
    @classmethod
    def _customers_blank_is_unset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None

    # --- end customers -------------------------------------------------------------------------

    # --- privacy: signed unsubscribe links and erasure (shared/privacy) -----------------------
    # The Key Vault secret (or env var) that signs the {unsubscribeToken} of the unsubscribe link.
    unsubscribe_signing_secret_name: str = Field(default="unsubscribe-signing-secret", min_length=1)
    # How long an unsubscribe link stays valid after the email is built.
    unsubscribe_link_days: int = Field(default=365, ge=1, le=3650)
    # The app role every caller of POST /api/privacy/erasure must prove (shared/caller_auth.py).
    privacy_app_role: str = Field(default="Privacy.Erase", min_length=1, max_length=120)
    # The app registration that stands for this connector's HTTP API; its app roles are
    # CUSTOMERS_APP_ROLE and PRIVACY_APP_ROLE. Bearer tokens must be issued for it (aud); unset,
    # only App Service authentication can vouch for a caller. With EASY_AUTH_ENABLED, the Bicep
    # configures App Service authentication with it.
    api_client_id: str | None = Field(default=None, max_length=120)
    # The aud of those tokens, the Application ID URI; unset: api://<API_CLIENT_ID>.
    api_audience: str | None = Field(default=None, max_length=400)

    @field_validator("api_client_id", "api_audience")
    @classmethod
    def _caller_blank_is_unset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None

    @model_validator(mode="after")
    def _check_api_audience(self) -> Settings:
        if self.api_audience is not None and self.api_client_id is None:
            raise ValueError("API_AUDIENCE needs API_CLIENT_ID, the app registration it belongs to")
        return self

    @property
    def api_audiences(self) -> frozenset[str]:
        """The ``aud`` values a caller's bearer token may carry (v2 tokens name the client id)."""
        if self.api_client_id is None:
            return frozenset()
        return frozenset({self.api_client_id, self.api_audience or f"api://{self.api_client_id}"})

    # --- end privacy ---------------------------------------------------------------------------

    # --- recovery analytics (shared/recovery) -------------------------------------------------
    # Share of customers (0-50 %) who get no abandoned-cart email, to measure what the emails cause.
    holdout_percent: int = Field(default=0, ge=0, le=50)
    # A customer stays in the same group (mailed or held out) for this many days.
    holdout_period_days: int = Field(default=30, ge=1, le=365)
    # The Key Vault secret (or env var) that keys the group assignment's hash.
    holdout_salt_secret_name: str = Field(default="holdout-salt", min_length=1)
    # Orders placed this many days after the first reminder count for that cart.
    attribution_days: int = Field(default=7, ge=1, le=30)
    # Six-field NCRONTAB (UTC) of track_conversions; the host resolves it in the binding.
    track_schedule: str = "0 5 * * * *"
    # Carts whose orders one track_conversions run looks up, at most.
    max_tracked_carts_per_run: int = Field(default=1000, ge=1, le=50_000)

    @field_validator("track_schedule")
    @classmethod
    def _check_track_schedule(cls, value: str) -> str:
        if len(value.split()) != _NCRONTAB_FIELDS:
            raise ValueError(
                "must be a six-field NCRONTAB expression (second minute hour day month weekday), in UTC"
            )
        return value

    # --- end recovery analytics ----------------------------------------------------------------

    @field_validator("operating_unit_numbers", mode="before")
    @classmethod
    def _parse_ouns(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("operating_unit_numbers")
    @classmethod
    def _check_ouns(cls, value: list[str]) -> list[str]:
        for oun in value:
            if not _OUN.match(oun):
                raise ValueError(f"{oun!r} is not an operating unit number")
        if len(set(value)) != len(value):
            raise ValueError("operating unit numbers must not repeat")
        return value

    @field_validator("detect_schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        if len(value.split()) != _NCRONTAB_FIELDS:
            raise ValueError(
                "must be a six-field NCRONTAB expression (second minute hour day month weekday), in UTC"
            )
        return value

    @field_validator(
        "retail_server_url",
        "entra_authority_host",
        "key_vault_url",
        "cosmos_endpoint",
        "retail_server_audience",
    )
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.abandoned_after_minutes >= self.lookback_minutes:
            raise ValueError(
                "ABANDONED_AFTER_MINUTES must be smaller than LOOKBACK_MINUTES, or the window is empty"
            )
        if self.state_store == "cosmos" and not self.cosmos_endpoint:
            raise ValueError("COSMOS_ENDPOINT is required when STATE_STORE is cosmos")
        if self.extra_ca_bundle is not None and not self.extra_ca_bundle.is_file():
            raise ValueError(f"EXTRA_CA_BUNDLE names {self.extra_ca_bundle}, which is not a file")
        if self.entra_credential == "federated" and not self.azure_client_id:
            raise ValueError(
                "ENTRA_CREDENTIAL=federated needs AZURE_CLIENT_ID, the client id of the function "
                "app's user-assigned managed identity (only a user-assigned identity can be a "
                "federated credential of an app registration); the Bicep sets it"
            )
        return self

    @property
    def authority(self) -> str:
        return f"{self.entra_authority_host}/{self.entra_tenant_id}"


def load_settings() -> Settings:
    """Read and validate the settings, turning pydantic's report into one that names app settings."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"] if not isinstance(part, int)]
        name = location[0].upper() if location else "settings"
        message = error["msg"]
        if error["type"] == "missing":
            message = "is required but not set"
        # The input is deliberately left out: it may be a connection string or another secret.
        problems.append(f"{name} {message}" if location else message)
    return "invalid app settings: " + "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

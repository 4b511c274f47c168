"""Builds the configured email provider; one per process, kept in ``Runtime.extras``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.email.base import EmailProvider
from shared.email.preview import PreviewProvider
from shared.http import HttpClient
from shared.secrets import CachedSecrets
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.email.emarsys_auth import EmarsysAuth
    from shared.runtime import Runtime

EXTRAS_KEY = "email_provider"


def build_provider(settings: Settings, http: HttpClient, secrets: CachedSecrets) -> EmailProvider:
    """The provider ``EMAIL_PROVIDER`` names; the preview whenever ``DRY_RUN`` is true."""
    provider = settings.effective_email_provider
    # Only the configured provider's module is imported, when it is first built.
    if provider == "emarsys":
        from shared.email.emarsys import EmarsysProvider
        from shared.email.emarsys_auth import OAuthTokenSource, WsseAuth

        assert settings.emarsys_event_id is not None  # checked by Settings
        auth: EmarsysAuth
        if settings.emarsys_auth == "wsse":
            auth = WsseAuth(
                secrets,
                user_secret_name=settings.emarsys_wsse_user_secret_name,
                secret_name=settings.emarsys_wsse_secret_name,
            )
        else:
            auth = OAuthTokenSource(
                http,
                secrets,
                auth_url=settings.emarsys_auth_url,
                client_id_secret_name=settings.emarsys_client_id_secret_name,
                client_secret_name=settings.emarsys_client_secret_name,
            )
        return EmarsysProvider(
            http,
            auth,
            api_url=settings.emarsys_api_url,
            event_id=settings.emarsys_event_id,
            key_id=settings.emarsys_key_id,
            create_missing_contacts=settings.emarsys_create_missing_contacts,
        )
    if provider == "sendgrid":
        from shared.email.sendgrid import SendGridProvider

        assert settings.sendgrid_template_id is not None and settings.sendgrid_from_email is not None
        return SendGridProvider(
            http,
            secrets,
            api_url=settings.sendgrid_api_url,
            api_key_secret_name=settings.sendgrid_api_key_secret_name,
            template_id=settings.sendgrid_template_id,
            from_email=settings.sendgrid_from_email,
            from_name=settings.sendgrid_from_name,
            unsubscribe_group_id=settings.sendgrid_unsubscribe_group_id,
        )
    if provider == "webhook":
        from shared.email.webhook import WebhookProvider

        assert settings.webhook_url is not None  # checked by Settings
        return WebhookProvider(
            http, secrets, url=settings.webhook_url, signing_secret_name=settings.webhook_signing_secret_name
        )
    return PreviewProvider(settings.preview_dir)


def provider_for(runtime: Runtime) -> EmailProvider:
    """The process's provider, built on first use. Building does no I/O, so no lock is needed."""
    existing = runtime.extras.get(EXTRAS_KEY)
    if existing is None:
        existing = build_provider(runtime.settings, runtime.http, runtime.secrets)
        runtime.extras[EXTRAS_KEY] = existing
    provider: EmailProvider = existing
    return provider

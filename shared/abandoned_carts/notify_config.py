"""The notify service's settings, read once from the app settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from shared.abandoned_carts.images import Viewport
from shared.abandoned_carts.links import uses_placeholder
from shared.privacy.consent import ConsentPolicy
from shared.settings import Settings


@dataclass(frozen=True)
class NotifyConfig:
    consent_policy: ConsentPolicy
    frequency_cap: timedelta
    order_check: bool
    reminder_steps: list[timedelta]
    site_url: str | None
    return_to_cart_url_template: str | None
    unsubscribe_url_template: str | None
    image_base_url: str | None
    viewports: list[Viewport]
    # Sends that arrive within this window leave as one provider batch call (COALESCE_WINDOW_MS).
    send_window_seconds: float = 0.0
    # The signed {unsubscribeToken} of the unsubscribe link (shared/privacy/tokens.py).
    unsubscribe_signing_secret_name: str = "unsubscribe-signing-secret"  # noqa: S105 (a name, not a secret)
    unsubscribe_link_days: int = 365

    @property
    def unsubscribe_needs_token(self) -> bool:
        return uses_placeholder(self.unsubscribe_url_template, "unsubscribeToken")

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyConfig:
        return cls(
            consent_policy=settings.consent_policy,
            frequency_cap=timedelta(hours=settings.frequency_cap_hours),
            order_check=settings.order_check,
            reminder_steps=[timedelta(minutes=m) for m in settings.reminder_steps],
            site_url=settings.site_url,
            return_to_cart_url_template=settings.return_to_cart_url_template,
            unsubscribe_url_template=settings.unsubscribe_url_template,
            image_base_url=settings.image_base_url,
            viewports=[Viewport.from_setting(v) for v in settings.image_viewports],
            send_window_seconds=settings.coalesce_window_ms / 1000,
            unsubscribe_signing_secret_name=settings.unsubscribe_signing_secret_name,
            unsubscribe_link_days=settings.unsubscribe_link_days,
        )

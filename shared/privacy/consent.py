"""May this customer get an abandoned-cart (marketing) email? One policy, chosen by CONSENT_POLICY.

Retail Server has no single "receives marketing email" flag (reference/retail-server.md, 3), so:

- ``opted_in``: the customer's email contact carries ``IsOptedInMarketing``. The strict choice,
  for regions that need prior consent.
- ``not_opted_out`` (default): the customer has not set ``OptOutPersonalization`` (no marketing
  or personalised content) nor ``OptOutWebActivityTracking`` (an abandoned-cart email is built from
  tracked shopping activity, so it is the one use that flag plainly forbids).
- ``off``: no consent check; only for transactional use, never for marketing mail.

Whatever the policy, a blocked customer, a customer without an email address and an address on the
suppression list get nothing. Reasons are short, stable strings: they are counted and logged.
"""

from __future__ import annotations

from typing import Literal

from shared.retail_server.models import ContactType, Customer

ConsentPolicy = Literal["opted_in", "not_opted_out", "off"]


def email_of(customer: Customer) -> str | None:
    """The address to write to: ``Email``, else the primary (or first) email contact."""
    if customer.email and customer.email.strip():
        return customer.email.strip()
    contacts = [c for c in customer.contacts if c.address_type_value == ContactType.EMAIL and c.value]
    contacts.sort(key=lambda c: not c.is_primary)
    return contacts[0].value.strip() if contacts and contacts[0].value else None


def opted_in_marketing(customer: Customer, email: str) -> bool:
    """Whether the email contact for ``email`` (else the primary email contact) is opted in."""
    contacts = [c for c in customer.contacts if c.address_type_value == ContactType.EMAIL]
    matching = [c for c in contacts if (c.value or "").strip().lower() == email.lower()]
    chosen = matching or [c for c in contacts if c.is_primary]
    return any(c.is_opted_in_marketing for c in chosen)


def consent_refusal(customer: Customer, policy: ConsentPolicy) -> str | None:
    """Why this customer must not be mailed under ``policy``, or None when the email may go out."""
    if customer.blocked:
        return "customer_blocked"
    email = email_of(customer)
    if email is None:
        return "no_email"
    if policy == "opted_in" and not opted_in_marketing(customer, email):
        return "no_marketing_opt_in"
    if policy == "not_opted_out":
        if customer.opt_out_personalization:
            return "opted_out_personalization"
        if customer.opt_out_web_activity_tracking:
            return "opted_out_tracking"
    return None

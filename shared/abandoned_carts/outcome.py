"""What became of one queue message: its status, its reason and what the email went without."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["sent", "previewed", "skipped", "failed", "ignored", "uncertain", "held_out"]


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str | None
    cart_id: str
    cart_version: int
    step: int
    provider_ids: dict[str, str] = field(default_factory=dict)
    # The optional parts the email went without ("images", "store_commerce_link").
    degraded: tuple[str, ...] = ()

"""The queue message between detection and notification: ids only, never personal data.

Version 2 adds ``traceparent``: the W3C trace context of the detection run that queued the message,
so the notify invocation continues the run's trace (one trace per cart's journey, from the timer to
the provider). Version 1 messages, queued before an upgrade, are still read; their notify
invocation starts a trace of its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import telemetry

SUPPORTED_VERSIONS = (1, 2)
CURRENT_VERSION: Literal[2] = 2


class CartMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    v: Literal[1, 2] = CURRENT_VERSION
    cart_id: str = Field(alias="cartId", min_length=1, max_length=128)
    cart_version: int = Field(alias="cartVersion", ge=0)
    oun: str = Field(min_length=1, max_length=32)
    step: int = Field(ge=1, le=20)
    # Four fixed-length hex fields: nothing else fits in it.
    traceparent: str | None = Field(default=None, max_length=55)

    @field_validator("traceparent")
    @classmethod
    def _trace_context_or_none(cls, value: str | None) -> str | None:
        # A trace context that cannot be read starts a new trace; it never costs a reminder.
        return value if value is not None and telemetry.TRACEPARENT.match(value) else None

    def encode(self) -> str:
        """The message as queued: the current version, stamped with the current trace context
        (the detection run's span) when there is one and the message has none of its own."""
        stamp = self.traceparent or telemetry.current_traceparent()
        message = self.model_copy(update={"v": CURRENT_VERSION, "traceparent": stamp})
        return message.model_dump_json(by_alias=True, exclude_none=True)

"""The queue message between detection and notification: ids only, never personal data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CartMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    v: Literal[1] = 1
    cart_id: str = Field(alias="cartId", min_length=1, max_length=128)
    cart_version: int = Field(alias="cartVersion", ge=0)
    oun: str = Field(min_length=1, max_length=32)
    step: int = Field(ge=1, le=20)

    def encode(self) -> str:
        return self.model_dump_json(by_alias=True)

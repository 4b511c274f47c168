"""The pair of deep links the HTTP API hands out: Store Commerce always, Cloud POS when configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.store_commerce import cloud_pos_link, deep_link_params, store_commerce_link


class DeepLinkRequest(BaseModel):
    """The body of ``POST /api/store-commerce/links``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    action_name: str = Field(alias="actionName", min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)


def deep_links(action: str, params: BaseModel | Mapping[str, Any], cpos_url: str | None) -> dict[str, str]:
    """``{"storeCommerce": ..., "cloudPos": ...}``; raises the errors of :mod:`shared.store_commerce`."""
    links = {"storeCommerce": store_commerce_link(action, params)}
    if cpos_url:
        links["cloudPos"] = cloud_pos_link(cpos_url, action, params)
    return links


def build_links(request: DeepLinkRequest, cpos_url: str | None) -> dict[str, Any]:
    """The answer of the links endpoint: the action, its normalised parameters and the links."""
    params = deep_link_params(request.action_name, request.parameters)
    return {
        "actionName": request.action_name,
        "parameters": params,
        "deepLinks": deep_links(request.action_name, params, cpos_url),
    }

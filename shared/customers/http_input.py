"""Moved to :mod:`shared.http_input` (the privacy endpoints use it too); kept for existing imports."""

from shared.http_input import (
    CORRELATION_HEADER,
    PRINCIPAL_HEADER,
    PROBLEM_TYPE_PREFIX,
    ROLE_CLAIM_TYPES,
    RequestRejectedError,
    correlation_id_for,
    read_json,
    reject,
    require_app_role,
)

__all__ = [
    "CORRELATION_HEADER",
    "PRINCIPAL_HEADER",
    "PROBLEM_TYPE_PREFIX",
    "ROLE_CLAIM_TYPES",
    "RequestRejectedError",
    "correlation_id_for",
    "read_json",
    "reject",
    "require_app_role",
]

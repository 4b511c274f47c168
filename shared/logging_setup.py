"""Logging for the app: redaction everywhere, and quiet Azure SDK HTTP logs."""

from __future__ import annotations

import logging
import os

from shared.privacy import redaction

# The levels LOG_LEVEL accepts (any case); the same four the settings contract documents.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

logger = logging.getLogger(__name__)


def configure_logging() -> None:
    redaction.install()
    raw = os.environ.get("LOG_LEVEL", "")
    level = raw.strip().upper() or "INFO"
    unknown = level not in LOG_LEVELS
    # This runs when function_app is imported: a typo must not stop the app from starting.
    logging.getLogger("shared").setLevel("INFO" if unknown else level)
    if unknown:
        logger.warning(
            "app setting LOG_LEVEL is %r, not one of %s: logging at INFO",
            raw,
            ", ".join(LOG_LEVELS),
        )
    # The SDKs log every HTTP request at INFO, headers included; that floods traces for no value.
    for noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

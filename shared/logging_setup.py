"""Logging for the app: redaction everywhere, and quiet Azure SDK HTTP logs."""

from __future__ import annotations

import logging
import os

from shared.privacy import redaction


def configure_logging() -> None:
    redaction.install()
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.getLogger("shared").setLevel(level)
    # The SDKs log every HTTP request at INFO, headers included; that floods traces for no value.
    for noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

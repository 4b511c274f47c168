"""Abandoned-cart recovery: detection (timer) and notification (queue)."""

"""Binding objects the Functions host would pass, for calling registered functions without it."""

from __future__ import annotations

from typing import Any


class OutBinding:
    """A ``func.Out`` the way the host provides one: ``set`` stores the value, ``get`` reads it."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value

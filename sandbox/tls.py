"""A throw-away certificate authority and a loopback server certificate, made at start."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class LoopbackTls:
    """A fresh CA whose PEM is written to ``directory``, and a server context for 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self._ca = trustme.CA(organization_name="D365 connector sandbox")
        self._leaf = self._ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = directory / "sandbox-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._leaf.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this CA (for tests and tools)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

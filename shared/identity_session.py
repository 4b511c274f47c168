"""The requests session MSAL is given. Its own module so that ``requests`` (and MSAL) load only
when the first token is asked for, on a worker thread, not when the app is imported."""

from __future__ import annotations

from typing import Any

import requests


class PinnedVerifySession(requests.Session):
    """A requests session whose ``verify`` is not overridden by REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE,
    and whose requests time out.

    requests lets those variables win over ``session.verify``; pinning keeps the trust decision
    with the app's own ``EXTRA_CA_BUNDLE`` setting. MSAL applies its own ``timeout`` only to a
    session it creates itself, and requests has no session-wide timeout, so without ``timeout`` a
    hung Entra endpoint would hold ``get_token`` (and everyone waiting on it) forever.
    """

    def __init__(self, *, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if not args and kwargs.get("timeout") is None:
            # (connect, read): each bounded; ``args`` would only be a positional call nobody makes.
            kwargs["timeout"] = (self.timeout, self.timeout)
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        settings: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings

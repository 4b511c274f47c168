"""The requests session MSAL is given: a default timeout, since MSAL sets one only on its own."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from shared.identity_session import PinnedVerifySession


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_request(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        calls.append(kwargs)
        return requests.Response()

    monkeypatch.setattr(requests.Session, "request", fake_request)
    return calls


def test_every_request_gets_the_session_timeout(sent: list[dict[str, Any]]) -> None:
    session = PinnedVerifySession(timeout=7.5)
    session.post("https://login.example/token", data={"grant_type": "client_credentials"})
    session.get("https://login.example/.well-known/openid-configuration", timeout=None)
    assert [call["timeout"] for call in sent] == [(7.5, 7.5), (7.5, 7.5)]


def test_an_explicit_timeout_is_kept(sent: list[dict[str, Any]]) -> None:
    PinnedVerifySession(timeout=7.5).get("https://login.example/", timeout=2)
    assert sent[0]["timeout"] == 2

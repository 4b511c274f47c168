"""The preview provider (files, escaping, no network) and the provider factory with its settings."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from shared.email.base import EmailMessage, Recipient
from shared.email.emarsys import EmarsysProvider
from shared.email.emarsys_auth import OAuthTokenSource, WsseAuth
from shared.email.factory import build_provider
from shared.email.preview import PreviewProvider, delete_previews, file_stem, recipient_index
from shared.email.sendgrid import SendGridProvider
from shared.email.webhook import WebhookProvider
from shared.http import HttpClient, RetryPolicy
from shared.secrets import CachedSecrets, EnvironmentSecrets
from shared.settings import Settings, SettingsError, load_settings


def cart_message(**overrides: Any) -> EmailMessage:
    data: dict[str, Any] = {
        "firstName": "<b>Zoë</b>",
        "lastName": "O'Brien",
        "email": "zoe@example.com",
        "language": "de-de",
        "currency": "EUR",
        "cartUrl": "https://shop.example/cart?id=c1&channel=5637144592",
        "unsubscribeUrl": "https://shop.example/unsubscribe?t=abc",
        "storeCommerceLink": "ms-retail-pos://D365.CreateTransaction?customer=C1",
        "subtotal": "1234.5",
        "total": "1234.50",
        "products": [
            {
                "name": 'Jacket "Storm" <XL>',
                "recordId": 68719476737,
                "itemId": "0042",
                "quantity": 2,
                "unitPrice": "617.25",
                "lineAmount": "1234.50",
                "url": "javascript:alert(1)",
                "image": {
                    "altText": "Jacket & hood",
                    "viewports": [
                        {
                            "url": "https://img.example/j.jpg?w=320&h=320&q=80&m=6&f=jpg",
                            "media": "(max-width: 480px)",
                            "width": 320,
                            "height": 320,
                            "useForDefaultImageTag": False,
                        },
                        {
                            "url": "https://img.example/j.jpg?w=640&h=640&q=80&m=6&f=jpg",
                            "media": "(min-width: 481px)",
                            "width": 640,
                            "height": 640,
                            "useForDefaultImageTag": True,
                        },
                    ],
                },
            }
        ],
    }
    data.update(overrides)
    return EmailMessage(
        dedup_key="cart/c1:v2:1",
        recipient=Recipient(email="zoe@example.com", first_name="Zoë", language="de-de", customer_id="C1"),
        data=data,
    )


async def test_preview_writes_json_and_escaped_html_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the preview must not open a connection")

    monkeypatch.setattr(socket, "socket", no_network)
    result = await PreviewProvider(tmp_path / "previews").send(cart_message())

    stem = file_stem("cart/c1:v2:1")
    assert stem == "cart_c1_v2_1"
    stem = f"{stem}.{recipient_index('C1', 'zoe@example.com')}"
    html_path = tmp_path / "previews" / f"{stem}.html"
    assert (result.status, result.provider_ids) == ("sent", {"preview": str(html_path)})
    record = json.loads((tmp_path / "previews" / f"{stem}.json").read_text())
    assert record["dedup_key"] == "cart/c1:v2:1"
    assert record["data"]["products"][0]["itemId"] == "0042"

    page = html_path.read_text()
    assert "<b>Zoë</b>" not in page and "&lt;b&gt;Zoë&lt;/b&gt;" in page
    assert "Jacket &quot;Storm&quot; &lt;XL&gt;" in page
    assert 'alt="Jacket &amp; hood"' in page
    assert "javascript:" not in page
    assert '<source media="(max-width: 480px)" srcset="https://img.example/j.jpg?w=320&amp;h=320' in page
    assert '<source media="(min-width: 481px)"' in page
    assert '<img src="https://img.example/j.jpg?w=640&amp;h=640&amp;q=80&amp;m=6&amp;f=jpg"' in page
    assert "1,234.50 EUR" in page and "617.25 EUR" in page
    assert 'href="https://shop.example/cart?id=c1&amp;channel=5637144592"' in page
    assert 'href="https://shop.example/unsubscribe?t=abc"' in page
    assert '<html lang="de">' in page


async def test_previews_are_private_and_named_without_readable_identifiers(tmp_path: Path) -> None:
    directory = tmp_path / "previews"
    await PreviewProvider(directory).send(cart_message())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert [f.suffix for f in files] == [".html", ".json"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "zoe" not in path.name.lower() and "C1" not in path.name


async def test_an_existing_wider_preview_folder_and_file_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "previews"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    provider = PreviewProvider(directory)
    first = Path((await provider.send(cart_message())).provider_ids["preview"])
    os.chmod(first, 0o644)
    await provider.send(cart_message())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600


async def test_previews_are_written_where_python_has_no_posix_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.11 on Windows has neither os.getuid nor os.fchmod; the folder's ACL decides there.
    monkeypatch.delattr(os, "getuid")
    monkeypatch.delattr(os, "fchmod")
    directory = tmp_path / "previews"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    result = await PreviewProvider(directory).send(cart_message())
    assert _page_head(result.provider_ids["preview"]) == "<!DOCTYPE html>"
    assert sorted(f.suffix for f in directory.iterdir()) == [".html", ".json"]


def _page_head(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")[: len("<!DOCTYPE html>")]


async def test_previews_of_an_account_or_an_address_are_deleted_from_the_listing(tmp_path: Path) -> None:
    directory = tmp_path / "previews"
    provider = PreviewProvider(directory)

    def message(key: str, email: str, account: str) -> EmailMessage:
        return cart_message().model_copy(
            update={"dedup_key": key, "recipient": Recipient(email=email, customer_id=account)}
        )

    await provider.send(message("c1.v1.s1", "zoe@example.com", "C1"))
    await provider.send(message("c1.v2.s1", "Zoe@Example.com", "C1"))
    await provider.send(message("c2.v1.s1", "zoe@example.com", "C9"))  # same address, other account
    await provider.send(message("c3.v1.s1", "ada@example.com", "C2"))
    (directory / "notes.txt").write_text("kept")

    assert delete_previews(directory, customer_id="C1", email=None) == 2
    assert delete_previews(directory, customer_id=None, email=" ZOE@example.com") == 1
    assert delete_previews(directory, customer_id="C1", email="zoe@example.com") == 0
    left = sorted(p.name for p in directory.iterdir())
    assert left == sorted(
        [
            "notes.txt",
            *(f"c3.v1.s1.{recipient_index('C2', 'ada@example.com')}{s}" for s in (".html", ".json")),
        ]
    )
    assert delete_previews(tmp_path / "missing", customer_id="C1", email=None) == 0


async def test_preview_of_a_line_without_image_and_no_optional_links(tmp_path: Path) -> None:
    message = cart_message(unsubscribeUrl=None, storeCommerceLink=None)
    products = [dict(message.data["products"][0], image=None)]
    message = cart_message(unsubscribeUrl=None, storeCommerceLink=None, products=products)
    await PreviewProvider(tmp_path).send(message)
    page = (tmp_path / f"cart_c1_v2_1.{recipient_index('C1', 'zoe@example.com')}.html").read_text()
    assert "<picture>" not in page and "Unsubscribe" not in page and "Store Commerce" not in page


def test_file_stem_never_escapes_the_directory() -> None:
    assert file_stem("../../etc/passwd") == "_.._.._etc_passwd"
    assert "/" not in file_stem("a/b\\c")


# ----- settings and factory

BASE = {
    "ENTRA_TENANT_ID": "t",
    "ENTRA_CLIENT_ID": "c",
    "RETAIL_SERVER_URL": "https://rs.example",
    "OPERATING_UNIT_NUMBERS": "128",
}


def settings_with(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for key in list(BASE) + [k.upper() for k in Settings.model_fields]:
        monkeypatch.delenv(key, raising=False)
    for key, value in {**BASE, **values}.items():
        monkeypatch.setenv(key, value)
    return load_settings()


@pytest.fixture
def http() -> HttpClient:
    # Building providers does no I/O; the session is never used.
    return HttpClient(session=None, policy=RetryPolicy())  # type: ignore[arg-type]


@pytest.fixture
def secrets() -> CachedSecrets:
    return CachedSecrets(EnvironmentSecrets({}), ttl_seconds=60)


def test_default_is_the_preview(
    monkeypatch: pytest.MonkeyPatch, http: HttpClient, secrets: CachedSecrets
) -> None:
    settings = settings_with(monkeypatch)
    provider = build_provider(settings, http, secrets)
    assert isinstance(provider, PreviewProvider)
    assert provider.directory == Path("out/previews")


def test_dry_run_forces_the_preview(
    monkeypatch: pytest.MonkeyPatch, http: HttpClient, secrets: CachedSecrets
) -> None:
    settings = settings_with(
        monkeypatch, EMAIL_PROVIDER="emarsys", DRY_RUN="true", PREVIEW_DIR="previews/dry"
    )
    provider = build_provider(settings, http, secrets)
    assert isinstance(provider, PreviewProvider) and provider.directory == Path("previews/dry")


def test_emarsys_oauth_by_default_and_wsse_on_request(
    monkeypatch: pytest.MonkeyPatch, http: HttpClient, secrets: CachedSecrets
) -> None:
    settings = settings_with(monkeypatch, EMAIL_PROVIDER="emarsys", EMARSYS_EVENT_ID="1234")
    provider = build_provider(settings, http, secrets)
    assert isinstance(provider, EmarsysProvider)
    assert provider.trigger_url == "https://api.emarsys.net/api/v3/event/1234/trigger"
    assert isinstance(provider._auth, OAuthTokenSource)
    assert provider._auth.token_url == "https://auth.emarsys.net/oauth2/token"
    assert provider.key_id == "3" and provider.create_missing_contacts is False

    settings = settings_with(
        monkeypatch,
        EMAIL_PROVIDER="emarsys",
        EMARSYS_EVENT_ID="1234",
        EMARSYS_AUTH="wsse",
        EMARSYS_KEY_ID="5001",
    )
    provider = build_provider(settings, http, secrets)
    assert isinstance(provider, EmarsysProvider) and isinstance(provider._auth, WsseAuth)
    assert provider.trigger_url == "https://api.emarsys.net/api/v2/event/1234/trigger"
    assert provider.key_id == "5001"


def test_sendgrid_and_webhook(
    monkeypatch: pytest.MonkeyPatch, http: HttpClient, secrets: CachedSecrets
) -> None:
    settings = settings_with(
        monkeypatch,
        EMAIL_PROVIDER="sendgrid",
        SENDGRID_TEMPLATE_ID="d-123",
        SENDGRID_FROM_EMAIL="shop@example.com",
    )
    assert isinstance(build_provider(settings, http, secrets), SendGridProvider)
    settings = settings_with(monkeypatch, EMAIL_PROVIDER="webhook", WEBHOOK_URL="https://hooks.example/in/")
    provider = build_provider(settings, http, secrets)
    assert isinstance(provider, WebhookProvider) and provider.url == "https://hooks.example/in"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"EMAIL_PROVIDER": "emarsys"}, "EMARSYS_EVENT_ID"),
        ({"EMAIL_PROVIDER": "sendgrid", "SENDGRID_FROM_EMAIL": "a@example.com"}, "SENDGRID_TEMPLATE_ID"),
        ({"EMAIL_PROVIDER": "sendgrid", "SENDGRID_TEMPLATE_ID": "d-1"}, "SENDGRID_FROM_EMAIL"),
        ({"EMAIL_PROVIDER": "webhook"}, "WEBHOOK_URL"),
        ({"EMAIL_PROVIDER": "webhook", "WEBHOOK_URL": "http://hooks.example"}, "WEBHOOK_URL"),
        ({"EMAIL_PROVIDER": "mailgun"}, "EMAIL_PROVIDER"),
        ({"EMARSYS_AUTH": "basic"}, "EMARSYS_AUTH"),
    ],
)
def test_invalid_email_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        settings_with(monkeypatch, **values)

"""The documentation checkers find what they are meant to find, on made-up pages: a test that
passes on the real docs proves something only if the same checker fails on a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from tests.docs.markdown import (
    CodeBlock,
    anchors,
    broken_links,
    command_lines,
    command_problems,
    github_slug,
    makefile_targets,
    setting_rows,
)
from tests.docs.test_readme import hand_written_hosts
from tests.docs.test_settings_reference import default_problem, known_names

TARGETS = {"demo", "test"}


def _page(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----- links and anchors


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Queue tuning (host.json)", "queue-tuning-hostjson"),
        ("GET and POST /api/unsubscribe", "get-and-post-apiunsubscribe"),
        ("5. App settings per deployment", "5-app-settings-per-deployment"),
        ("`ENTRA_CREDENTIAL` and `AZURE_CLIENT_ID`", "entra_credential-and-azure_client_id"),
        ("CreateCustomer 409, 502, 504", "createcustomer-409-502-504"),
        ("F&O 401 and 500", "fo-401-and-500"),
        ("See [the report](report.md)", "see-the-report"),
    ],
)
def test_slugs_follow_githubs_rules(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_repeated_headings_get_numbered_anchors() -> None:
    found = anchors('# Page\n\n## Fix\n\n## Fix\n\n```sh\n## not a heading\n```\n<a id="kept"></a>\n')
    assert {"page", "fix", "fix-1", "kept"} <= found
    assert "not-a-heading" not in found


def test_a_missing_file_is_found(tmp_path: Path) -> None:
    page = _page(tmp_path, "docs/a.md", "See [the guide](how-to/missing.md) and [b](b.md).\n")
    _page(tmp_path, "docs/b.md", "# B\n")
    assert broken_links(page, tmp_path) == ["line 1: how-to/missing.md (no such file)"]


def test_a_missing_anchor_is_found_in_this_page_and_another(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "docs/a.md",
        "# A\n\n## Order check\n\n[here](#order-check) [gone](#delivery) [there](b.md#the-call) "
        "[nope](b.md#the-cal)\n",
    )
    _page(tmp_path, "docs/b.md", "# B\n\n## The call\n")
    assert broken_links(page, tmp_path) == [
        "line 5: #delivery (no such anchor)",
        "line 5: b.md#the-cal (no such anchor)",
    ]


def test_links_in_code_and_external_links_are_not_checked(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "a.md",
        "`[x](missing.md)` [web](https://example.com/missing.md) [mail](mailto:a@b.c)\n\n"
        "```md\n[y](missing.md)\n```\n",
    )
    assert broken_links(page, tmp_path) == []


def test_a_link_out_of_the_repository_is_found(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    page = _page(root, "a.md", "[up](../outside.md)\n")
    _page(tmp_path, "outside.md", "# Outside\n")
    assert broken_links(page, root) == ["line 1: ../outside.md (outside the repository)"]


# ----- commands


def _check(line: str) -> list[str]:
    return command_problems(line, targets=TARGETS)


def test_the_real_makefile_targets_are_read() -> None:
    assert {"demo", "test", "bench"} <= makefile_targets()
    assert "PYTHON" not in makefile_targets()


@pytest.mark.parametrize(
    "line",
    [
        "make demo",
        'make demo ARGS="--telemetry console"',
        "SANDBOX_MEDIA_FAULT=500 make demo",
        ".venv/bin/python -m sandbox.demo --provider emarsys",
        "python -m scripts.configure_dynamics check",
        "python -m pytest -q tests/docs",
        "VAULT=$(azd env get-value AZURE_KEY_VAULT_NAME)",
        "az login --tenant <tenant id> && azd auth login",
        "printf 'Secret: ' && read -rs SECRET && echo",
        'curl -sS "$(azd env get-value AZURE_FUNCTION_APP_ENDPOINT)/api/unsubscribe" 2>&1 | cat',
        ". .venv/bin/activate && func start",
        ".venv\\Scripts\\Activate.ps1",
        "$env:FUNCTION_APP = azd env get-value AZURE_FUNCTION_APP_ENDPOINT",
        "sudo apt-get install azure-functions-core-tools-4",
    ],
)
def test_real_commands_pass(line: str) -> None:
    assert _check(line) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("make deploy", "make deploy: the Makefile has no such target"),
        ("make demo nonsense", "make nonsense: the Makefile has no such target"),
        ("python -m sandbox.nosuch", "python -m sandbox.nosuch: no such module"),
        ("python -m shared", "python -m shared: no such module"),  # a package without __main__
        (".venv/bin/python -m nosuch", "python -m nosuch: no such module"),
        ("frobnicate --all", "frobnicate: not a make target"),
        ("az login && frobnicate", "frobnicate: not a make target"),
        ("X=$(frobnicate now)", "frobnicate: not a make target"),
        ("python scripts/nosuch.py", "python scripts/nosuch.py: no such script"),
        (".venv/bin/black .", ".venv/bin/black: the virtual environment has no black"),
    ],
)
def test_missing_commands_are_found(line: str, problem: str) -> None:
    problems = _check(line)
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_blocks_join_continuations_and_skip_comments_and_output() -> None:
    shell = CodeBlock("sh", ("# a comment", "make demo \\", "    nonsense   # why", "", "$ make test"), 1)
    assert command_lines(shell) == ["make demo nonsense", "make test"]
    console = CodeBlock("console", ("$ make demo", "carts found: 12", "> make test"), 1)
    assert command_lines(console) == ["make demo", "make test"]
    powershell = CodeBlock(
        "powershell",
        (
            "azd env set A `",
            "  b",
        ),
        1,
    )
    assert command_lines(powershell) == ["azd env set A b"]


# ----- settings tables and hosts


def test_setting_rows_are_found_and_others_are_not() -> None:
    text = (
        "| Setting | Default | Meaning |\n| --- | --- | --- |\n"
        "| `LOG_LEVEL` | `INFO` | level |\n| `AzureWebJobsStorage` | \u2013 | host |\n"
        "| `batchSize` | `32` | not a setting |\n| `A_B`, `C_D` | x | two names |\n"
        "```md\n| `IN_CODE` | x | y |\n```\n"
    )
    names = [name for name, _ in setting_rows(text, {"AzureWebJobsStorage"})]
    assert names == ["LOG_LEVEL", "AzureWebJobsStorage"]


def test_a_setting_the_code_does_not_read_is_not_known() -> None:
    assert "LOG_LEVEL" in known_names()
    assert "ORDER_CHECK_ENABLED" not in known_names()


def test_a_wrong_default_is_found() -> None:
    field = Settings.model_fields["frequency_cap_hours"]
    assert default_problem("FREQUENCY_CAP_HOURS", ["`FREQUENCY_CAP_HOURS`", "`24`", "m"], field) is None
    assert "the code's default is '24'" in str(
        default_problem("FREQUENCY_CAP_HOURS", ["`FREQUENCY_CAP_HOURS`", "`12`", "m"], field)
    )
    required = Settings.model_fields["retail_server_url"]
    assert default_problem("RETAIL_SERVER_URL", ["`RETAIL_SERVER_URL`", "\u2013", "m"], required) is not None


def test_hand_written_hosts_are_found() -> None:
    assert hand_written_hosts("https://<app>.azurewebsites.net/api/unsubscribe") != []
    assert hand_written_hosts("curl https://func-api-x.azurewebsites.net/api") != []
    assert hand_written_hosts('"$(azd env get-value AZURE_FUNCTION_APP_ENDPOINT)/api"') == []

"""The README is the front door: it names the two commands, the deployment, the Dynamics step a
first-time user trips over, and carries the architecture diagram. No page writes a function app's
host name by hand: Flex Consumption apps get a generated one, so examples use what azd outputs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.markdown import ROOT, markdown_files, relative

README = ROOT / "README.md"
# azurewebsites.net host names, as an example may write them (`<app>.azurewebsites.net`, ...).
HAND_WRITTEN_HOST = re.compile(r"[\w<>{}\[\]$.-]*\.azurewebsites\.net", re.IGNORECASE)


def hand_written_hosts(text: str) -> list[str]:
    return HAND_WRITTEN_HOST.findall(text)


@pytest.mark.parametrize("phrase", ["make demo", "make test", "azd up", "1110", "```mermaid"])
def test_readme_names_the_essentials(phrase: str) -> None:
    assert phrase in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", markdown_files(), ids=relative)
def test_no_hand_written_function_app_host(page: Path) -> None:
    found = hand_written_hosts(page.read_text(encoding="utf-8"))
    assert found == [], (
        f"{relative(page)} writes a host name by hand ({found}); use the endpoint azd outputs: "
        "$(azd env get-value AZURE_FUNCTION_APP_ENDPOINT)"
    )

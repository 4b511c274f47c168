"""Every relative link of every Markdown file of the repository resolves: the file or folder it
names exists, and its ``#anchor`` is a heading (GitHub's slug rules) or an ``<a id>`` of that page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.markdown import broken_links, is_relative, links, markdown_files, relative

PAGES = markdown_files()


def test_the_pages_are_found() -> None:
    names = {relative(page) for page in PAGES}
    assert {"README.md", "docs/reference/settings.md", "docs/troubleshooting.md"} <= names


def test_the_pages_link_somewhere_relative() -> None:
    """Guards against a link reader that finds nothing, which would pass every page below."""
    found = [
        link for page in PAGES for link in links(page.read_text(encoding="utf-8")) if is_relative(link.target)
    ]
    assert len(found) > 50


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == [], f"{relative(page)} has broken links"

"""checkov scans infra/ offline and finds nothing: every exception is an inline, explained skip.

checkov lives in its own virtual environment (it pins libraries of its own); `make install`
creates it. The scan must not reach the network: the update check and the platform download are
switched off, and a proxy that refuses connections catches anything else.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.infra.bicep import INFRA, ROOT, bicep_files

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
_SKIP = re.compile(r"checkov:skip=(CKV_[A-Z0-9_]+):?(.*)")


@pytest.fixture(scope="module")
def report() -> dict[str, object]:
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV}; `make install` creates it")
    env = {
        **os.environ,
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
        "BC_SKIP_MAPPING": "TRUE",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
        "LOG_LEVEL": "WARNING",
    }
    completed = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [str(CHECKOV), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "--quiet", "-o", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    try:
        parsed = json.loads(completed.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(completed.stdout[-2000:])
        raise
    assert isinstance(parsed, dict), "expected one report for the bicep framework"
    return parsed


def test_checkov_finds_no_failed_check(report: dict[str, object]) -> None:
    results = report["results"]
    assert isinstance(results, dict)
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for check in results.get("failed_checks", [])
    ]
    assert failed == []


def test_checkov_parses_every_file(report: dict[str, object]) -> None:
    # checkov bundles an older pycep; a file it cannot parse would silently go unscanned.
    summary = report["summary"]
    assert isinstance(summary, dict)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0


def test_every_skip_gives_a_reason() -> None:
    for path in bicep_files():
        for line in path.read_text().splitlines():
            match = _SKIP.search(line)
            if match:
                assert len(match.group(2).strip()) >= 20, (
                    f"{path.name}: {match.group(1)} skipped without a reason"
                )

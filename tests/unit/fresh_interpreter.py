"""Run a script in a fresh interpreter, for checks of what start-up does: the test process has long
since imported everything."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    """Run ``code`` (dedented) with this interpreter from the repository root; its standard output.
    Fails the test, with the script's standard error, when the script fails."""
    done = subprocess.run(  # noqa: S603 - our own interpreter, our own code
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout

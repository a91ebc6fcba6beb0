"""What the command-line tools print: no warnings that are anomalib's, not the user's."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO


def test_export_help_prints_no_future_warnings() -> None:
    """anomalib 2.7's Dinomaly import warns twice (timm, dinov2) when the plugin imports anomalib.models."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    result = subprocess.run(
        [sys.executable, "-m", "anomalib_simsid.deploy.export_cli", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: simsid-export" in result.stdout
    assert "Warning" not in result.stderr, result.stderr

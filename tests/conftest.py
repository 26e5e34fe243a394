"""Test-wide setup: offline hubs, and the example third-party objective installed for real.

The example package is pip-installed into a temporary folder that joins ``sys.path`` before
collection, so entry-point discovery finds it exactly as it would in a user's environment,
and every test parametrized over the registry covers it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "objbench-reverse-lm"


def pytest_configure(config) -> None:
    target = Path(tempfile.mkdtemp(prefix="objbench-plugins-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])

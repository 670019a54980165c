import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found beside the repo ({SHARED})")
    return SHARED


@pytest.fixture
def mobilekit_cli():
    """Run the CLI in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    def run(*args, check=False, timeout=600, cwd=None, env=None):
        full_env = dict(os.environ, **(env or {}))
        return subprocess.run([sys.executable, "-m", "mobilekit", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, check=check,
                              cwd=cwd, env=full_env)

    return run

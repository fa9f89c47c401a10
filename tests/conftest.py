"""Shared test settings: where ../shared/data is, and quiet TensorFlow logs."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The real datasets live beside the repository (../shared/data), in development and in CI.
SHARED_DATA = Path(os.environ.get("SEGTRAIN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_sessionstart(session):
    # Tests that need the real data skip without it on a user's machine; CI must run them.
    if os.environ.get("CI") and not SHARED_DATA.is_dir():
        pytest.exit(f"CI needs the shared datasets at {SHARED_DATA} (set SEGTRAIN_SHARED_DATA)", returncode=3)


def shared_data(*parts: str) -> Path:
    """``../shared/data/<parts>``, or skip the calling test (a clone of the public repository has no such folder)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared datasets beside the repository; CI always has them)")
    return path

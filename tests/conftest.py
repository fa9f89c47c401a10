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


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """The built-in sample dataset (VOC layout, 4 classes), generated once per test session."""
    from segtrain.data.formats.sample_dataset import ensure_sample_dataset

    return ensure_sample_dataset(tmp_path_factory.mktemp("data") / "sample")


def sample_config(root: Path, *, train: dict | None = None, model: dict | None = None,
                  output_dir: Path | None = None, **data):
    """A validated ``Config`` on the sample dataset at ``root``; ``data`` keys override its data section."""
    from segtrain.config import from_dict
    from segtrain.data.formats.sample_dataset import SAMPLE_CLASSES

    raw = {"data": {"format": "voc", "root": str(root), "num_classes": 4, "classes": list(SAMPLE_CLASSES), **data},
           "train": dict(train or {}), "model": dict(model or {})}
    if output_dir is not None:
        raw["output_dir"] = str(output_dir)
    return from_dict(raw)

"""Shared test settings: where ../shared/data is, and quiet TensorFlow logs."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The real datasets live beside the repository (../shared/data), in development and in CI.
SHARED_DATA = Path(os.environ.get("SEGTRAIN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def in_ci() -> bool:
    """``CI`` set to anything but empty, 0 or false (GitHub Actions and most CI services set CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_sessionstart(session):
    # Tests that need the real data skip without it on a user's machine; CI must run them.
    if in_ci() and not SHARED_DATA.is_dir():
        pytest.exit(f"CI needs the shared datasets at {SHARED_DATA} (set SEGTRAIN_SHARED_DATA)", returncode=3)


def missing(what: str, hint: str = "") -> None:
    """The one way a test gives up for a missing dataset, backend or optional package: a skip on a
    user's machine, an error naming what is missing under CI (CI installs everything and has the data)."""
    message = f"needs {what}" + (f" ({hint})" if hint else "")
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def shared_data(*parts: str) -> Path:
    """``../shared/data/<parts>``, or ``missing`` (a clone of the public repository has no such folder)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        missing(str(path), "the shared datasets beside the repository; CI always has them")
    return path


def need_module(name: str, extra: str | None = None):
    """``import name``, or ``missing`` naming what installs it (``pytest.importorskip``, CI-aware);
    ``extra``: the optional-dependency group that has it (None: a core dependency)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    where = f'pip install -e ".[{extra}]"' if extra else "a core dependency: pip install -e ."
    missing(f"the Python package {name}", f"{where}; CI installs .[dev,export]")


def need_backend(backend: str) -> None:
    """``missing`` unless the Keras backend ``backend`` is installed."""
    from segtrain.backend import installed

    if not installed(backend):
        missing(f"the {backend} backend", f'pip install -e ".[{backend}]"; the dev extra that CI installs has it')


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """The built-in sample dataset (VOC layout, 4 classes), generated once per test session."""
    from segtrain.data.formats.sample_dataset import ensure_sample_dataset

    return ensure_sample_dataset(tmp_path_factory.mktemp("data") / "sample")


def fit_tiny_unet(config, x, y, *, width: int, learning_rate: float, epochs: int):
    """A 2-level transposed U-Net with BatchNorm (momentum 0.8: moving statistics that settle within a
    few dozen steps) fitted with ``model.fit`` on ``x, y`` and saved as ``<config.output_dir>/checkpoints/
    best.keras`` beside its ``config.yaml``: a trained run folder in seconds. Returns the model."""
    import keras

    from segtrain.config import save_config
    from segtrain.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("unet", 4, (None, None, 3), decoder="transposed", norm="batch", width=width, depth=2)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    model.fit(x, y, batch_size=6, epochs=epochs, verbose=0)
    run = Path(config.output_dir)
    save_config(config, run / "config.yaml")
    (run / "checkpoints").mkdir(parents=True)
    model.save(run / "checkpoints" / "best.keras")
    return model


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

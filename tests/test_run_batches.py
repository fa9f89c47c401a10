"""The training pipeline kept for the whole run (``RunBatches``, TensorFlow's default data layer):
the batches, losses and weights of a run that builds its pipeline per epoch, with one pipeline."""

import json

import keras
import numpy as np
import pytest
from conftest import sample_config

from segtrain.data.loading.batches import RunBatches, build_batches
from segtrain.engines import tensorflow_engine
from segtrain.training import Trainer


class Positions:
    """An endless stream of (epoch, batch) positions, opened at any one; records its opens and closes."""

    def __init__(self, steps: int):
        self.steps, self.opened, self.closed = steps, [], 0

    def open_at(self, epoch: int, batch: int):
        self.opened.append((epoch, batch))
        outer = self

        class Stream:
            def __init__(self):
                self.at = (epoch, batch)

            def __next__(self):
                here = self.at
                e, b = here
                self.at = (e + 1, 0) if b + 1 == outer.steps else (e, b + 1)
                return here

            def close(self):
                outer.closed += 1

        return Stream()


def test_epochs_share_one_stream_and_a_position_it_is_not_at_reopens_it():
    positions = Positions(steps=3)
    run = RunBatches(positions.open_at, steps_per_epoch=3)
    with run.epoch(0, 0, 3) as got:
        assert list(got) == [(0, 0), (0, 1), (0, 2)]
    with run.epoch(1, 0, 3) as got:
        assert list(got) == [(1, 0), (1, 1), (1, 2)]
    assert positions.opened == [(0, 0)] and positions.closed == 0
    with run.epoch(2, 0, 3) as got:  # stopped after one batch (a signal, a callback)
        assert next(got) == (2, 0)
    with run.epoch(2, 2, 1) as got:  # not where the stream stands: reopened there
        assert list(got) == [(2, 2)]
    assert positions.opened == [(0, 0), (2, 2)] and positions.closed == 1
    with run.epoch(3, 0, 2) as got:  # a run that ends mid-epoch takes fewer
        assert list(got) == [(3, 0), (3, 1)]
    with pytest.raises(ZeroDivisionError):
        with run.epoch(3, 2, 1) as got:
            next(got)
            raise ZeroDivisionError  # an error in the loop body closes the stream
    assert positions.closed == 2
    with run.epoch(4, 0, 1) as got:  # and the next epoch opens a new one
        assert list(got) == [(4, 0)]
    assert positions.opened[-1] == (4, 0)
    run.close()
    assert positions.closed == 3


def test_one_pipeline_per_run_trains_what_a_pipeline_per_epoch_trains(sample_root, tmp_path, monkeypatch):
    """TensorFlow (the suite's backend), the sample dataset augmented, precise BN and validation
    between epochs: three epochs from one pipeline (built once) give the losses and weights of
    three per-epoch pipelines (a dataset_fn of the same data layer)."""
    built = []
    build_dataset = tensorflow_engine.build_dataset

    def counting(*args, **kwargs):
        built.append((kwargs["epoch"], kwargs["skip_batches"]))
        return build_dataset(*args, **kwargs)

    monkeypatch.setattr(tensorflow_engine, "build_dataset", counting)

    def fit(folder, dataset_fn=None):
        config = sample_config(sample_root, crop=[32, 32], hflip=True, output_dir=tmp_path / folder,
                               train={"epochs": 3, "batch_size": 8, "seed": 3, "deterministic": True,
                                      "mixed_precision": "none"},
                               model={"name": "segnet_basic", "width": 4, "norm": "batch"})
        keras.utils.set_random_seed(0)
        Trainer(config, dataset_fn=dataset_fn, verbose=0).fit()
        state = json.loads((tmp_path / folder / "checkpoints" / "state.json").read_text())
        model = keras.models.load_model(tmp_path / folder / "checkpoints" / "last.keras")
        return [h["loss"] for h in state["history"]], [w.numpy() for w in model.weights]

    losses, weights = fit("one")
    assert built == [(0, 0)]
    per_epoch_losses, per_epoch_weights = fit("per_epoch", lambda *a, **k: build_batches(*a, **k))
    assert built == [(0, 0)]  # the dataset_fn path builds through batches.build_batches, once per epoch
    assert len(losses) == 3 and losses == per_epoch_losses
    for a, b in zip(weights, per_epoch_weights, strict=True):
        np.testing.assert_array_equal(a, b)

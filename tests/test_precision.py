"""train.mixed_precision: auto's choice by hardware, float32 copies, and one val number for trainer and evaluate."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from segtrain.precision import auto_policy, cpu_flags, float32_copy, is_float32, resolve_policy


@pytest.mark.parametrize("gpus, flags, expected", [
    ([(9, 0)], set(), "mixed_bfloat16"),
    ([(8, 0)], set(), "mixed_bfloat16"),
    ([(7, 5)], {"avx512_bf16"}, "mixed_float16"),  # the GPU runs the step, whatever the CPU has
    ([(8, 6), (7, 0)], set(), "mixed_float16"),  # the weakest GPU decides
    ([(6, 1)], set(), "float32"),
    ([], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ([], {"amx_tile", "amx_bf16"}, "mixed_bfloat16"),
    ([], {"avx512f", "avx512_vnni"}, "float32"),
    ([], set(), "float32"),
])
def test_auto_policy_by_hardware(gpus, flags, expected):
    policy, why = auto_policy(gpus, flags)
    assert policy == expected and why


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_explicit_settings_are_kept():
    assert resolve_policy("none")[0] == "float32"
    assert resolve_policy("mixed_float16")[0] == "mixed_float16"
    assert resolve_policy("mixed_bfloat16") == ("mixed_bfloat16", "train.mixed_precision: mixed_bfloat16")
    # auto: test_gpu_capabilities_and_auto_choice_from_injected_devices


def conv_bn_model():
    from segtrain.models.blocks import ConvNormAct

    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(6, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    y = ConvNormAct(4, norm="batch")(keras.layers.ReLU()(y))  # its BN is made in __init__: a nested layer
    return keras.Model(x, keras.layers.Conv2D(3, 1)(y))


def test_float32_copy_of_a_mixed_model_computes_what_a_float32_model_computes():
    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(0)
        mixed = conv_bn_model()
        copy = float32_copy(mixed)  # made while the global policy is mixed, as in the trainer
        keras.mixed_precision.set_global_policy("float32")
        reference = conv_bn_model()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    reference.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).normal(0, 50, (2, 8, 8, 3)).astype(np.float32)

    assert not is_float32(mixed) and is_float32(copy)
    assert all(w.dtype == "float32" for w in copy.weights)
    np.testing.assert_array_equal(np.asarray(copy(x)), np.asarray(reference(x)))
    assert np.abs(np.asarray(mixed(x), np.float32) - np.asarray(reference(x))).max() > 1e-4  # bf16 really differed
    assert float32_copy(reference) is reference


@pytest.mark.slow
def test_trainer_val_miou_equals_evaluate_on_best_checkpoint(tmp_path):
    """One tiny epoch trained in mixed_bfloat16: the logged val mIoU is what `segtrain evaluate` reports."""
    import yaml

    from segtrain.cli import main as cli_main

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "_base_": os.path.join(repo, "configs", "quickstart.yaml"),
        "data": {"crop": [32, 32], "resize": [48, 40]},  # labels are 64x64: scored natively, not at 48x40
        "model": {"norm": "batch", "width": 8},
        "train": {"epochs": 1, "batch_size": 8, "mixed_precision": "mixed_bfloat16", "precise_bn": {"batches": 2}},
        "output_dir": str(tmp_path / "run"),
    }))
    assert cli_main(["train", "--config", str(path)]) == 0
    run = tmp_path / "run"
    logged = json.loads((run / "checkpoints" / "state.json").read_text())["history"][-1]["val_miou"]
    assert "dtype policy mixed_bfloat16" in (run / "run.log").read_text()

    assert cli_main(["evaluate", "--config", str(path), "--checkpoint", str(run / "checkpoints" / "best.keras"),
                     "--json", str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())["miou"]
    assert evaluated == pytest.approx(logged, abs=1e-6)


def test_auto_keeps_3d_tensorflow_on_cpu_in_float32_and_refuses_bf16_there(monkeypatch):
    """TensorFlow's CPU bf16 3-D convolution gradient aborts the process (double free): auto
    must not walk into it on a bf16 CPU, and an explicit mixed_bfloat16 is one error line."""
    import segtrain.precision as precision
    from segtrain.errors import SegtrainError

    flags = {"avx512_bf16"}
    assert auto_policy([], flags, 2, "tensorflow")[0] == "mixed_bfloat16"
    assert auto_policy([], flags, 3, "jax")[0] == "mixed_bfloat16"
    policy, why = auto_policy([], flags, 3, "tensorflow")
    assert policy == "float32" and "3-D" in why
    assert auto_policy([(8, 0)], flags, 3, "tensorflow")[0] == "mixed_bfloat16"  # GPUs are not affected
    monkeypatch.setattr(precision.keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])
    with pytest.raises(SegtrainError, match="^train.mixed_precision: mixed_bfloat16 with 3-D data"):
        resolve_policy("mixed_bfloat16", 3)
    assert resolve_policy("mixed_bfloat16", 2)[0] == "mixed_bfloat16"


def tiny_run(tmp_path, mixed_precision, epochs=3):
    """A tiny in-memory training (test_training's model and data) -> (trainer, per-step losses)."""
    from test_training import in_memory, make_config, make_data, tiny_model

    from segtrain.training import Trainer

    images, masks = make_data()
    losses = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    trainer = Trainer(make_config(tmp_path / mixed_precision, epochs=epochs, mixed_precision=mixed_precision,
                                  optimizer={"name": "sgd", "learning_rate": 0.1}),
                      model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[record], verbose=0)
    trainer.fit()
    return trainer, np.array(losses)


def test_mixed_float16_trains_with_loss_scaling_and_tracks_float32(tmp_path):
    """mixed_float16 (auto's choice on a compute capability 7.x GPU) on CPU: float16 compute, a
    LossScaleOptimizer that scales the loss and unscales the gradients, finite and learning."""
    mixed, losses = tiny_run(tmp_path, "mixed_float16")
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert mixed.model.layers[-1].compute_dtype == "float16" and mixed.model.layers[-1].kernel.dtype == "float32"
    steps = len(losses)
    assert steps == 12 and np.isfinite(losses).all() and losses[-3:].mean() < 0.8 * losses[:3].mean()
    # The dynamic scale started at 2**15: every step either kept it (finite gradients: counted) or halved it.
    scale, counted = float(mixed.optimizer.dynamic_scale.numpy()), int(mixed.optimizer.step_counter.numpy())
    halvings = round(np.log2(32768.0 / scale))
    assert scale == 32768.0 / 2 ** halvings and counted + halvings == steps
    assert "dtype policy mixed_float16" in (tmp_path / "mixed_float16" / "run" / "run.log").read_text()
    # The scaled loss's gradients are unscaled before the update: the run follows float32's (measured: 3.6e-4).
    _, reference = tiny_run(tmp_path, "none")
    np.testing.assert_allclose(losses, reference, rtol=2e-3)


class FakeTFDevice:
    def __init__(self, name):
        self.name = name


def test_gpu_capabilities_and_auto_choice_from_injected_devices(monkeypatch):
    """``gpu_capabilities`` parses what each backend reports; ``auto`` then picks by the weakest GPU."""
    import types

    import tensorflow as tf

    from segtrain import precision
    from segtrain.engines import engine_module

    assert precision.gpu_capabilities() == []  # this test process: TensorFlow on CPU
    details = {"GPU:0": {"compute_capability": (8, 6)}, "GPU:1": {"compute_capability": (7, 0)}, "GPU:2": {}}
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [FakeTFDevice(n) for n in details] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: details[device.name])
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    assert precision.gpu_capabilities() == [(8, 6), (7, 0)]  # a GPU without a capability is left out
    assert precision.resolve_policy("auto") == ("mixed_float16", "GPU compute capability 7.0")
    details.pop("GPU:1")
    assert precision.resolve_policy("auto") == ("mixed_bfloat16", "GPU compute capability 8.6")

    fake_jax = types.SimpleNamespace(devices=lambda: [types.SimpleNamespace(platform="gpu", compute_capability="9.0"),
                                                      types.SimpleNamespace(platform="cpu")])
    monkeypatch.setattr(engine_module("jax"), "jax", fake_jax)  # each engine module asks its own framework
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert precision.gpu_capabilities() == [(9, 0)]
    fake_cuda = types.SimpleNamespace(device_count=lambda: 2, get_device_capability=lambda i: [(7, 5), (6, 1)][i])
    monkeypatch.setattr(engine_module("torch"), "torch", types.SimpleNamespace(cuda=fake_cuda))
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    assert precision.gpu_capabilities() == [(7, 5), (6, 1)]
    assert precision.resolve_policy("auto") == ("float32", "GPU compute capability 6.1 (no tensor cores)")

"""One trainer on every Keras backend: the same run on TensorFlow, JAX and PyTorch, checkpoints
across backends, and train/evaluate/predict in a process where TensorFlow cannot be imported.

Each backend runs in a subprocess (Keras picks its backend once, at import). The runs share
their initial weights (a ``.weights.h5`` file written here), the data (the NumPy loader and
tf.data yield the same batches) and the recipe, so their loss curves differ only by
floating-point summation order.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import need_backend, need_module
from segtrain.backend import installed

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
STEPS = 20  # 4 epochs of 5 batches (20 training images of the sample set are used)

TRAIN_SCRIPT = textwrap.dedent('''
    import json, sys
    import keras
    import segtrain.models
    from segtrain.config import load_config
    from segtrain.models import build_model_from_config
    from segtrain.training import Trainer

    config_path, out, init = sys.argv[1:4]
    config = load_config(config_path, ["output_dir=" + out])
    losses = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(logs["loss"])

    def model_fn(config, shape):
        model = build_model_from_config(config, shape)
        model.load_weights(init)
        return model

    result = Trainer(config, model_fn=model_fn, callbacks=[Record()], verbose=0).fit()
    with open(out + "/result.json", "w") as fh:
        json.dump({"backend": keras.backend.backend(), "losses": losses, "miou": result["miou"],
                   "tensorflow_loaded": "tensorflow" in sys.modules}, fh)
''')

# Makes `import tensorflow` (and everything that needs it) fail, as in an environment without it.
NO_TENSORFLOW = textwrap.dedent('''
    import importlib.abc, json, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf2onnx", "tf_keras"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    from segtrain.cli import main

    for argv in json.loads(sys.argv[1]):
        code = main(argv)
        if code:
            sys.exit(f"{argv[0]} exited with {code}")
    import keras
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
    print(json.dumps({"backend": keras.backend.backend(), "tensorflow_modules": loaded}))
''')


def need(backend: str) -> None:
    need_backend(backend)  # a skip, or an error under CI=true


def backend_env(backend: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("KERAS_BACKEND", None)
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    return env


def run_python(script: Path, args: list[str], backend: str | None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], env=backend_env(backend), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def write_config(tmp_path: Path, root: Path, **train) -> Path:
    settings = {"epochs": 4, "batch_size": 4, "deterministic": True, "seed": 3, "mixed_precision": "none",
                "optimizer": {"name": "adam", "learning_rate": 0.01}, "schedule": {"name": "constant"}, **train}
    path = tmp_path / "backends.yaml"
    path.write_text(textwrap.dedent(f"""
        _base_: {REPO / "configs" / "quickstart.yaml"}
        data:
          root: {root}
          sample: false
          crop: [32, 32]
        model:
          width: 4
          norm: batch
        train: {json.dumps(settings)}
    """))
    return path


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory, sample_root) -> Path:
    """20 training and 8 validation images of the sample set (5 steps of batch 4 per epoch)."""
    root = tmp_path_factory.mktemp("small") / "sample"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for split, count in (("train", 20), ("val", 8)):
        ids = (sample_root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:count]
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for name in ids:
            for sub, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
                (root / sub / (name + ext)).write_bytes((sample_root / sub / (name + ext)).read_bytes())
    return root


@pytest.fixture(scope="module")
def same_run_on_each_backend(tmp_path_factory, small_sample) -> dict:
    """backend -> {losses, miou, run folder} of one recipe from one set of initial weights."""
    import keras

    from segtrain.config import load_config
    from segtrain.models import build_model_from_config

    tmp = tmp_path_factory.mktemp("backends")
    config = write_config(tmp, small_sample)
    init = tmp / "init.weights.h5"
    keras.utils.set_random_seed(0)  # the same initial weights in every test session
    build_model_from_config(load_config(config), (None, None, 3)).save_weights(init)
    (tmp / "train.py").write_text(TRAIN_SCRIPT)
    runs = {backend: subprocess.Popen([sys.executable, str(tmp / "train.py"), str(config), str(tmp / backend), str(init)],
                                      env=backend_env(backend), cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            for backend in BACKENDS if installed(backend)}  # side by side: much of each is single-threaded start-up
    results = {}
    for backend, run in runs.items():
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        results[backend] = {**json.loads((tmp / backend / "result.json").read_text()), "run": tmp / backend}
    return results


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_loss_curve_and_val_miou_match_tensorflow(same_run_on_each_backend, backend):
    need("tensorflow")
    need(backend)
    tf_run, other = same_run_on_each_backend["tensorflow"], same_run_on_each_backend[backend]
    assert other["backend"] == backend
    assert not other["tensorflow_loaded"]  # installed here, but a JAX/PyTorch run never imports it
    assert len(tf_run["losses"]) == len(other["losses"]) == STEPS
    # Same weights, batches and updates, in float32: only summation order differs. README: "the same loss
    # curve to 1e-6" (measured: 5.1e-7 relative on JAX, 3.7e-7 on PyTorch, over the 20 steps).
    np.testing.assert_allclose(other["losses"], tf_run["losses"], rtol=1e-6, atol=0)
    assert tf_run["losses"][-1] < tf_run["losses"][0]  # it learned
    # measured: 0.2253030565 on all three, to the last digit
    assert other["miou"] >= 0.2 and other["miou"] == pytest.approx(tf_run["miou"], abs=1e-6)


@pytest.mark.parametrize("saved_on, other", [("jax", "jax"), ("torch", "torch"), ("tensorflow", "jax")])
def test_checkpoint_gives_the_same_logits_on_tensorflow_and_another_backend(same_run_on_each_backend, saved_on,
                                                                             other, tmp_path):
    """A .keras written on one backend, run on TensorFlow (this process) and on ``other`` (a subprocess)."""
    need(saved_on)
    need(other)
    import keras

    import segtrain.models  # noqa: F401

    checkpoint = same_run_on_each_backend[saved_on]["run"] / "checkpoints" / "last.keras"
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "logits.py"
    script.write_text(textwrap.dedent('''
        import sys, keras, numpy as np
        import segtrain.models
        model = keras.models.load_model(sys.argv[1], compile=False)
        np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False)))
    '''))
    done = run_python(script, [str(checkpoint), str(tmp_path / "images.npy"), str(tmp_path / "other.npy")], other)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = np.load(tmp_path / "other.npy")
    here = keras.ops.convert_to_numpy(keras.models.load_model(checkpoint, compile=False)(images, training=False))
    # The same weights; only the backends' convolution kernels differ (measured: <= 1e-6 of the largest logit).
    np.testing.assert_allclose(here, theirs, rtol=0, atol=1e-5 * max(1.0, np.abs(theirs).max()))
    assert np.mean(here.argmax(-1) == theirs.argmax(-1)) > 0.999


@pytest.mark.slow
def test_jax_trains_in_mixed_bfloat16_and_validates_in_float32(tmp_path, small_sample):
    need("jax")
    config = write_config(tmp_path, small_sample, epochs=1, mixed_precision="mixed_bfloat16")
    run = tmp_path / "run"
    done = run_python(REPO / "train.py", ["--config", str(config), "--set", f"output_dir={run}"], "jax")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend jax (1 replica); dtype policy: mixed_bfloat16" in done.stdout
    row = json.loads((run / "checkpoints" / "state.json").read_text())["history"][-1]
    assert np.isfinite(row["loss"]) and 0.0 < row["val_miou"] <= 1.0
    # Validated in float32: the logged number is what float32 `segtrain evaluate` gives on the checkpoint
    # (a bf16 validation flips pixels and moves it).
    done = run_python(REPO / "segtrain" / "__main__.py", ["evaluate", "--config", str(config), "--checkpoint",
                                                          str(run / "checkpoints" / "best.keras"),
                                                          "--json", str(tmp_path / "m.json")], "jax")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == pytest.approx(row["val_miou"], abs=1e-6)


def test_train_evaluate_predict_without_tensorflow(tmp_path, small_sample):
    need("jax")
    config = write_config(tmp_path, small_sample, epochs=1, class_weights="median_frequency")
    run = tmp_path / "run"
    commands = [
        ["check-dataset", "--config", str(config)],
        ["train", "--config", str(config), "--set", f"output_dir={run}"],
        ["evaluate", "--config", str(config), "--checkpoint", str(run / "checkpoints" / "best.keras"),
         "--output-dir", str(tmp_path / "eval")],
        ["predict", "--checkpoint", str(run / "checkpoints" / "best.keras"), "--config", str(config),
         "--input", str(small_sample / "JPEGImages"), "--output", str(tmp_path / "pred")],
    ]
    (tmp_path / "no_tf.py").write_text(NO_TENSORFLOW)
    done = run_python(tmp_path / "no_tf.py", [json.dumps(commands)], backend=None)  # KERAS_BACKEND unset
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"backend": "jax", "tensorflow_modules": []}  # chosen because TensorFlow is missing
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((run / "checkpoints" / "state.json").read_text())["history"][-1]
    assert abs(metrics["miou"] - trained["val_miou"]) < 1e-6  # the logged number is evaluate's number
    assert len(list((tmp_path / "pred").glob("*.png"))) == len(list((small_sample / "JPEGImages").glob("*.jpg")))
    assert (run / "log.csv").is_file() and any((run / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard without TensorFlow
    assert len(json.loads((run / "class_weights.json").read_text())["weights"]) == 4  # counted without TensorFlow


def test_missing_backend_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="mxnet")
    done = subprocess.run([sys.executable, "-m", "segtrain", "train", "--config", "configs/quickstart.yaml"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: KERAS_BACKEND=mxnet: segtrain runs on tensorflow, jax, torch; set one of those"]


def test_multi_worker_is_refused_off_tensorflow_in_one_line(tmp_path, small_sample):
    backend = "jax"
    need(backend)
    config = write_config(tmp_path, small_sample, distribute="multi_worker")
    done = run_python(REPO / "train.py", ["--config", str(config), "--set", f"output_dir={tmp_path / 'run'}"], backend)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.distribute: multi_worker runs on KERAS_BACKEND=tensorflow only" in lines[0]


def test_mirrored_is_refused_on_torch_in_one_line(tmp_path, small_sample):
    need("torch")
    config = write_config(tmp_path, small_sample, distribute="mirrored")
    done = run_python(REPO / "train.py", ["--config", str(config), "--set", f"output_dir={tmp_path / 'run'}"], "torch")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: train.distribute: on KERAS_BACKEND=torch segtrain trains on one device; set train.distribute: none, "
        "or use KERAS_BACKEND=jax or tensorflow for several"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_jax_data_parallel_over_two_devices_matches_one_device(tmp_path, small_sample):
    """``train.distribute: mirrored`` on JAX shards each batch over the local devices (two virtual CPU
    devices here); XLA computes the global batch's loss and gradients, so the run is one device's."""
    need("jax")
    script = tmp_path / "dp.py"
    script.write_text(textwrap.dedent('''
        import json, sys
        import keras
        import segtrain.models
        from segtrain.config import load_config
        from segtrain.training import Trainer

        out = {"devices": len(keras.distribution.list_devices())}
        for distribute in ("none", "mirrored"):
            losses = []
            class Record(keras.callbacks.Callback):
                def on_train_batch_end(self, batch, logs=None):
                    losses.append(logs["loss"])
            config = load_config(sys.argv[1], ["output_dir=" + sys.argv[2] + "/" + distribute,
                                               "train.distribute=" + distribute])
            trainer = Trainer(config, callbacks=[Record()], verbose=0)
            result = trainer.fit()
            out[distribute] = {"losses": losses, "miou": result["miou"], "replicas": trainer.engine.replicas}
        print(json.dumps(out))
    '''))
    config = write_config(tmp_path, small_sample, epochs=2)
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    try:
        done = run_python(script, [str(config), str(tmp_path)], "jax")
    finally:
        del os.environ["XLA_FLAGS"]
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["none"]["replicas"] == 1 and out["mirrored"]["replicas"] == 2
    np.testing.assert_allclose(out["mirrored"]["losses"], out["none"]["losses"], rtol=1e-4)
    assert abs(out["mirrored"]["miou"] - out["none"]["miou"]) <= 0.01


def test_export_from_jax_converts_through_tensorflow(same_run_on_each_backend, tmp_path):
    need("jax")
    need("tensorflow")
    need_module("tf2onnx", "export")
    checkpoint = same_run_on_each_backend["jax"]["run"] / "checkpoints" / "best.keras"
    output = tmp_path / "model.onnx"
    done = run_python(REPO / "segtrain" / "__main__.py", ["export", "--checkpoint", str(checkpoint), "--format", "onnx",
                                                          "--output", str(output)], "jax")
    assert done.returncode == 0, done.stderr[-3000:]
    assert output.is_file() and "parity" in done.stdout.lower()

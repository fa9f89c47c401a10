"""tf.distribute: mirrored on 2 logical CPUs equals one device; 2 local workers stay in sync.

Each case runs in a subprocess: logical devices and collective ops must be configured
before TensorFlow initialises, which pytest's process has long done.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from segtrain.distribute import free_ports, is_chief

REPO = Path(__file__).resolve().parents[1]

COMMON = textwrap.dedent('''
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, numpy as np, tensorflow as tf
    from segtrain.config import from_dict
    from segtrain.training import Trainer

    def data():
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (8, 12, 12, 3)).astype(np.float32)
        masks = (images[..., 0] > 128).astype(np.uint8)
        masks[:2, :9] = 255  # void is uneven across replicas: exercises global normalisation
        return images, masks

    def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
        images, masks = data()
        ds = tf.data.Dataset.from_tensor_slices((images, masks))
        return ds.batch(config.train.batch_size, drop_remainder=training).skip(skip_batches)

    def model_fn(config, input_shape):
        x = keras.Input((None, None, 3))
        y = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
        y = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(y)
        return keras.Model(x, keras.layers.Conv2D(2, 1)(y))

    def config(out, distribute="none"):
        return from_dict({"data": {"format": "folders", "root": out, "num_classes": 2, "classes": ["a", "b"]},
                          "train": {"epochs": 2, "batch_size": 4, "distribute": distribute,
                                    "optimizer": {"name": "sgd", "learning_rate": 0.05}},
                          "output_dir": out})

    def fit(out, **kw):
        trainer = Trainer(config(out, kw.pop("distribute", "none")), model_fn=model_fn, dataset_fn=dataset_fn,
                          verbose=0, **kw)
        result = trainer.fit()
        losses = [r["loss"] for r in json.load(open(os.path.join(out, "checkpoints", "state.json")))["history"]] \\
            if os.path.exists(os.path.join(out, "checkpoints", "state.json")) else None
        return result, losses, [w.tolist() for w in trainer.model.get_weights()]
''')

MIRRORED = COMMON + textwrap.dedent('''
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    out = sys.argv[1]
    one = fit(os.path.join(out, "one"), strategy=tf.distribute.get_strategy())
    two = fit(os.path.join(out, "two"), strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    json.dump({"one": one, "two": two}, open(os.path.join(out, "mirrored.json"), "w"))
''')

WORKER = COMMON + textwrap.dedent('''
    out = sys.argv[1]
    result, losses, weights = fit(out, distribute="multi_worker")
    json.dump({"result": result, "weights": weights}, open(out + ".json", "w"))
''')


def run_script(tmp_path: Path, name: str, text: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / f"{name}.py"
    script.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", **(env or {}))
    return subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_mirrored_two_cpus_gives_the_single_device_loss(tmp_path):
    proc = run_script(tmp_path, "mirrored", MIRRORED, str(tmp_path))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    got = json.loads((tmp_path / "mirrored.json").read_text())
    (_, loss_one, w_one), (_, loss_two, w_two) = got["one"], got["two"]
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
    for a, b in zip(w_one, w_two):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)


def test_two_local_workers_end_with_identical_weights(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(run_script(tmp_path, "worker", WORKER, str(tmp_path / f"w{index}"), env={"TF_CONFIG": tf_config}))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    w0, w1 = (json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2))
    assert w0["result"]["steps"] == w1["result"]["steps"] == 4  # 8 samples / global batch 4 x 2 epochs
    for a, b in zip(w0["weights"], w1["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert np.isfinite(w0["result"]["loss"])
    # Only the chief writes checkpoints and logs.
    assert (tmp_path / "w0" / "checkpoints" / "last.keras").is_file() and (tmp_path / "w0" / "log.csv").is_file()
    assert not (tmp_path / "w1" / "checkpoints").exists() and not (tmp_path / "w1" / "log.csv").exists()


def test_is_chief_reads_tf_config(monkeypatch):
    cluster = {"worker": ["a:1", "b:2"]}
    for task, chief in (({"type": "worker", "index": 0}, True), ({"type": "worker", "index": 1}, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert is_chief() is chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["c:3"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert is_chief() is False
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief() is True

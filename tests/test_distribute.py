"""tf.distribute: mirrored on 2 logical CPUs equals one device; 2 local workers equal one process on the global batch.

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
import pytest

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
                                    "mixed_precision": "none",  # exact float32 (auto is bf16 on a CPU with avx512_bf16)
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
    trainer = Trainer(config(out, sys.argv[2]), model_fn=model_fn, dataset_fn=dataset_fn, verbose=0)
    result = trainer.fit()
    # Which samples this process's replica was fed: the engine's own distribution of one epoch's batches
    # (the first pixel of every sample is unique, so it names the sample).
    images = data()[0]
    ids = {float(images[i, 0, 0, 0]): i for i in range(len(images))}
    strategy = trainer.engine.strategy
    seen = []
    with trainer.engine.epoch_batches(dataset_fn(trainer.config, "train", True), 2) as batches:
        for batch in batches:
            for local in strategy.experimental_local_results(batch[0]):
                seen.append([ids[float(v)] for v in local.numpy()[:, 0, 0, 0]])
    json.dump({"result": result, "weights": [w.tolist() for w in trainer.model.get_weights()],
               "replicas": strategy.num_replicas_in_sync, "engine_replicas": trainer.engine.replicas,
               "seen": seen, "chief": trainer.chief}, open(out + ".json", "w"))
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
    # float32; measured: equal losses, weights within 1.5e-8 absolute.
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
    for a, b in zip(w_one, w_two):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-7)


def test_two_local_workers_train_what_one_process_trains_on_the_global_batch(tmp_path):
    """2 workers (1 replica each), each fed its half of every global batch of 4, end with the weights of
    one process trained on the whole global batch: the gradients really are summed over the workers."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = [run_script(tmp_path, "worker", WORKER, str(tmp_path / "one"), "none")]  # the one-process reference
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(run_script(tmp_path, "worker", WORKER, str(tmp_path / f"w{index}"), "multi_worker",
                                env={"TF_CONFIG": tf_config}))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    one, w0, w1 = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "w0", "w1"))

    assert one["replicas"] == 1
    assert w0["replicas"] == w1["replicas"] == w0["engine_replicas"] == w1["engine_replicas"] == 2
    # Different shards: worker 0 gets the first half of each global batch, worker 1 the second.
    assert one["seen"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert w0["seen"] == [[0, 1], [4, 5]] and w1["seen"] == [[2, 3], [6, 7]]
    assert w0["result"]["steps"] == w1["result"]["steps"] == one["result"]["steps"] == 4  # 8 samples / 4 x 2 epochs
    for a, b in zip(w0["weights"], w1["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))  # in sync
    # ... and equal to the one-process run: only float32 summation order differs (measured: equal final
    # loss, weights within 1.5e-8 absolute, 9e-7 relative).
    for a, b in zip(one["weights"], w0["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-7)
    assert w0["result"]["loss"] == pytest.approx(one["result"]["loss"], rel=1e-5)
    assert w0["result"]["loss"] < json.loads((tmp_path / "one" / "checkpoints" / "state.json").read_text())[
        "history"][0]["loss"]  # it learned
    # Only the chief writes checkpoints and logs.
    assert w0["chief"] and not w1["chief"]
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


@pytest.mark.slow
def test_workers_launcher_runs_a_two_replica_training(tmp_path, sample_root):
    """`segtrain train --workers 2`: two local processes on 127.0.0.1 form one 2-replica run; the chief
    logs it, the exit code is 0; a config error in the workers is a non-zero exit of the launcher."""
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"format": "voc", "root": str(sample_root), "num_classes": 4,
                 "classes": ["background", "circle", "square", "triangle"], "crop": [32, 32]},
        "model": {"name": "segnet_basic", "width": 4, "norm": "group"},
        "train": {"steps": 2, "batch_size": 4, "mixed_precision": "none"},
        "output_dir": str(tmp_path / "run"),
    }))
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "segtrain", "train", "--config", str(config), "--workers", "2"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "run"
    assert "backend tensorflow (2 replicas)" in (run / "run.log").read_text()
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["step"] == 2 and np.isfinite(state["history"][-1]["loss"])

    bad = subprocess.run([sys.executable, "-m", "segtrain", "train", "--config", str(config), "--workers", "2",
                          "--set", "train.batch_size=0"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "train.batch_size" in bad.stderr

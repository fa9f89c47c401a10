"""Run tracking (segtrain.tracking) against the real thing, offline: TensorBoard event files read back
with tensorboard's reader on all three backends, an MLflow tracking server (and the plain file
store) read back with MlflowClient, W&B offline runs read back from their .wandb record file, a
resume that continues the same MLflow and W&B runs, and a tracking server that is down."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import need_backend, need_module
from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.tracking.facts import flat_params

REPO = Path(__file__).resolve().parent.parent
EPOCHS, STEPS_PER_EPOCH, CLASSES = 2, 4, ("dark", "red")
EPOCH_TAGS = ("loss", "lr", "val_miou", "val_pixel_accuracy", "val_mean_accuracy", "seconds", "images_per_second",
              "data_wait", *(f"val_iou/{n}" for n in CLASSES))
PICTURE_TAGS = ("val/confusion_matrix", "val/prediction_0", "val/prediction_1")

# A tiny run in a fresh process (any backend): a 3x3 conv on 16x16 NumPy batches, as in test_training.
TRAIN = textwrap.dedent('''
    import json, os, signal, sys
    import keras, numpy as np
    from segtrain.config import from_dict
    from segtrain.training import Trainer

    args = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 16, 16, 3)).astype(np.float32)
    masks = (images[..., 0] > 128).astype(np.uint8)

    def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
        size = config.train.batch_size
        return [(images[i:i + size], masks[i:i + size]) for i in range(0, 16, size)][skip_batches:]

    def model_fn(config, input_shape):
        x = keras.Input((None, None, 3))
        y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(keras.layers.Rescaling(1 / 127.5, offset=-1)(x))
        return keras.Model(x, keras.layers.Conv2D(2, 1)(y))

    config = from_dict({"data": {"format": "folders", "root": args["dir"], "num_classes": 2, "classes": ["dark", "red"]},
                        "train": {"epochs": args["epochs"], "batch_size": 4, "mixed_precision": "none",
                                  "optimizer": {"name": "adam", "learning_rate": 0.02}},
                        "runtime": {"loggers": args["loggers"], "mlflow_uri": args.get("uri"), "experiment": "tiny"},
                        "output_dir": args["dir"] + "/run"})
    class ServerGoesDown(keras.callbacks.Callback):  # kills the tracking server's process group mid-run
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == args.get("server_dies_after_epoch"):
                os.killpg(args["server_group"], signal.SIGKILL)

    Trainer(config, model_fn=model_fn, dataset_fn=dataset_fn, callbacks=[ServerGoesDown()],
            verbose=0).fit(resume=args.get("resume", False))
    print(json.dumps({"tensorflow_loaded": "tensorflow" in sys.modules}))
''')


def train(tmp_path: Path, loggers: list[str], backend: str = "jax", env: dict | None = None, **args) -> dict:
    """One tiny run in a subprocess; returns its report (and its stderr as ``stderr``)."""
    need_backend(backend)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": backend, "WANDB_MODE": "offline",
                   "WANDB_DIR": str(tmp_path), **(env or {})}
    job = {"dir": str(tmp_path), "loggers": loggers, "epochs": EPOCHS, **args}
    done = subprocess.run([sys.executable, "-c", TRAIN, json.dumps(job)], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def csv_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def epoch_values(row: dict) -> dict[str, float]:
    """log.csv's row as the loggers' epoch tags."""
    out = {tag: float(row[tag]) for tag in EPOCH_TAGS if not tag.startswith("val_iou/")}
    out.update({f"val_iou/{n}": float(row[f"iou_{n}"]) for n in CLASSES})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- TensorBoard ------------------------------------------------------------------------------
def check_tensorboard(run_dir: Path, epochs: int = EPOCHS) -> dict:
    """The event files hold log.csv's numbers for every epoch, loss and lr for every step, and the pictures."""
    need_module("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    rows = csv_rows(run_dir)
    assert len(rows) == epochs
    for tag in EPOCH_TAGS:  # every epoch scalar of every epoch, log.csv's number
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got == pytest.approx({int(r["epoch"]): epoch_values(r)[tag] for r in rows}, rel=1e-6), tag
    for tag in ("step/loss", "step/lr"):
        assert [e.step for e in events.Scalars(tag)] == list(range(1, epochs * STEPS_PER_EPOCH + 1))
    for tag in PICTURE_TAGS:  # a PNG per validation
        pictures = events.Images(tag)
        assert [p.step for p in pictures] == list(range(1, epochs + 1))
        assert all(p.encoded_image_string[:4] == b"\x89PNG" for p in pictures)
    assert set(tags["scalars"]) == {*EPOCH_TAGS, "step/loss", "step/lr"}
    assert {"run/facts", "run/config"} <= set(tags["tensors"])
    return {"scalars": sum(len(events.Scalars(t)) for t in tags["scalars"]),
            "images": sum(len(events.Images(t)) for t in tags["images"])}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch"])  # jax: in the MLflow / W&B test below
def test_tensorboard_scalars_and_images_read_back(tmp_path, backend):
    report = train(tmp_path, ["csv", "tensorboard"], backend)
    assert report["tensorflow_loaded"] == (backend == "tensorflow")  # event files without TensorFlow
    print("read back:", backend, check_tensorboard(tmp_path / "run"))


# ---- MLflow -----------------------------------------------------------------------------------
@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on a free 127.0.0.1 port with a SQLite store; its URI once it answers."""
    with serve_mlflow(tmp_path) as (uri, _):
        yield uri


@contextlib.contextmanager
def serve_mlflow(tmp_path):
    """(URI, process group) of an ``mlflow server`` with a SQLite store, once it answers; killed on exit."""
    need_module("mlflow", "mlflow")
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")  # a file, not a pipe nobody drains
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=tmp_path, stdout=log, stderr=log, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield uri, server.pid
    finally:  # the server's whole process group: uvicorn and MLflow's job runner outlive a killed parent
        with contextlib.suppress(ProcessLookupError):  # (a test may have killed it already)
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


def check_mlflow_run(uri: str, run_dir: Path, epochs: int) -> dict:
    """The one run of experiment ``tiny`` holds every metric of every epoch, the params and the artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # a resume continues the run, never a second one
    run = runs[0]
    assert json.loads((run_dir / "tracking.json").read_text())["mlflow"] == run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    rows = csv_rows(run_dir)
    assert len(rows) == epochs
    for tag in EPOCH_TAGS:
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, tag)}
        assert history == pytest.approx({int(r["epoch"]): epoch_values(r)[tag] for r in rows}, rel=1e-9), tag
    for tag in ("step/loss", "step/lr"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, tag))
        assert steps == list(range(1, epochs * STEPS_PER_EPOCH + 1))
    params = run.data.params
    assert params["train.epochs"] == str(EPOCHS) and params["data.classes"] == "['dark', 'red']"
    assert set(params) == set(flat_params(yaml.safe_load((run_dir / "config.yaml").read_text())))  # every config key
    tags = run.data.tags
    assert tags["segtrain.backend"] == "jax" and tags["segtrain.precision"] == "float32"
    assert tags["segtrain.version.keras"] and tags["segtrain.version.jax"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "curves.png", "pictures"} <= artifacts
    count = len(artifacts) - 1
    for epoch in range(1, epochs + 1):
        folder = f"pictures/epoch-{epoch:04d}"
        names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, folder)}
        assert names == {"confusion_matrix.png", "prediction_0.png", "prediction_1.png"}, folder
        count += len(names)
    local = client.download_artifacts(run.info.run_id, "curves.png", str(run_dir.parent / "download"))
    assert Path(local).read_bytes() == (run_dir / "curves.png").read_bytes()  # the newest curves
    metrics = sum(len(client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics)
    return {"metrics": metrics, "params": len(params), "tags": len(tags), "artifacts": count}


W_AND_B_HEADER = struct.Struct("<4sHB")  # ":W&B", magic, version
W_AND_B_BLOCK = 32768


def wandb_records(path: Path) -> list:
    """The records of a .wandb file (wandb's leveldb-style log: 32 KiB blocks of CRC-framed chunks), parsed
    with wandb's own protobuf schema (wandb 0.31 ships no Python reader)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert W_AND_B_HEADER.unpack(data[:7])[0] == b":W&B"
    records, pos, chunks = [], 7, b""
    while pos + 7 <= len(data):
        room = W_AND_B_BLOCK - pos % W_AND_B_BLOCK
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if room < 7 or (kind == 0 and length == 0):  # block padding
            pos += room
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def check_wandb_runs(wandb_dir: Path, run_dir: Path, epochs: int) -> dict:
    """Every offline run folder is the same W&B run; together they hold every step and epoch logged."""
    folders = sorted(wandb_dir.glob("offline-run-*"))
    run_id = json.loads((run_dir / "tracking.json").read_text())["wandb"]
    assert folders and all(f.name.endswith(run_id) for f in folders)
    history, files, config = {}, set(), {}
    for folder in folders:
        for record in wandb_records(folder / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                history.setdefault(items["_step"], {}).update(items)
            elif kind == "files":
                files.update(f.path for f in record.files.files)
            elif kind == "run":
                assert record.run.run_id == run_id
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
    rows = csv_rows(run_dir)
    assert sorted(s for s, items in history.items() if "step/loss" in items) == list(range(1, epochs * STEPS_PER_EPOCH + 1))
    for row in rows:
        logged = history[int(row["step"])]
        assert logged["epoch"] == int(row["epoch"])
        assert {t: logged[t] for t in EPOCH_TAGS} == pytest.approx(epoch_values(row), rel=1e-9)
        assert all(logged[f"{t}/_type"] == "image-file" for t in PICTURE_TAGS)
    assert {"config.yaml", "curves.png"} <= files
    assert sum(f.startswith("media/images/val/") for f in files) == 3 * epochs
    assert config["train.epochs"] == str(epochs) and config["run.backend"] == "jax"  # W&B takes the resumed config
    scalars = sum(1 for items in history.values() for k in items if not k.startswith("_") and "/_" not in k
                  and not k.startswith("val/"))
    return {"runs": len(folders), "scalars": scalars, "files": len(files), "config": len(config)}


@pytest.mark.slow
def test_mlflow_server_and_wandb_offline_read_back_and_a_resume_continues_the_same_runs(tmp_path, mlflow_server):
    need_module("wandb", "wandb")
    loggers = ["csv", "tensorboard", "mlflow", "wandb"]
    train(tmp_path, loggers, uri=mlflow_server)
    first = json.loads((tmp_path / "run" / "tracking.json").read_text())
    report = train(tmp_path, loggers, uri=mlflow_server, epochs=EPOCHS + 1, resume=True)
    assert json.loads((tmp_path / "run" / "tracking.json").read_text()) == first
    assert "warning" not in report["stderr"] and not report["tensorflow_loaded"]
    tensorboard_counts = check_tensorboard(tmp_path / "run", EPOCHS + 1)
    mlflow_counts = check_mlflow_run(mlflow_server, tmp_path / "run", EPOCHS + 1)
    wandb_counts = check_wandb_runs(tmp_path / "wandb", tmp_path / "run", EPOCHS + 1)
    assert wandb_counts["runs"] == 2  # one offline folder per process, one run id
    print("read back:", {"mlflow": mlflow_counts, "wandb": wandb_counts, "tensorboard (jax)": tensorboard_counts})


@pytest.mark.slow
def test_mlflow_file_store_read_back(tmp_path, monkeypatch):
    need_module("mlflow", "mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store unless told (see below)
    uri = (tmp_path / "mlruns").as_uri()
    train(tmp_path, ["csv", "mlflow"], uri=uri, env={"MLFLOW_ALLOW_FILE_STORE": "true"})
    print("read back:", check_mlflow_run(uri, tmp_path / "run", EPOCHS))


@pytest.mark.slow
@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "file-store-refused"])
def test_a_tracking_server_down_or_refusing_is_one_warning_line_and_training_goes_on(tmp_path, uri):
    need_module("mlflow", "mlflow")
    uri = uri.format(port=free_port()) if "{port}" in uri else (tmp_path / "mlruns").as_uri()
    report = train(tmp_path, ["csv", "mlflow"], env={"MLFLOW_ALLOW_FILE_STORE": "false"}, uri=uri)
    warnings = [line for line in report["stderr"].splitlines() if "mlflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: mlflow: ")
    assert warnings[0].endswith("tracking to mlflow is off for this run, training goes on")
    assert len(csv_rows(tmp_path / "run")) == EPOCHS  # no epoch lost
    assert "tracking to mlflow is off" in (tmp_path / "run" / "run.log").read_text()


def _one_warning(report: dict, logger: str) -> str:
    lines = [line for line in report["stderr"].splitlines() if logger in line.lower()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {logger}: "), report["stderr"][-2000:]
    assert lines[0].endswith(f"tracking to {logger} is off for this run, training goes on")
    return lines[0]


@pytest.mark.slow
def test_a_tracking_server_that_goes_down_mid_run_is_one_warning_line_and_no_epoch_is_lost(tmp_path):
    with serve_mlflow(tmp_path) as (uri, group):
        report = train(tmp_path, ["csv", "mlflow"], uri=uri, epochs=3, server_group=group, server_dies_after_epoch=1)
    _one_warning(report, "mlflow")  # the first epoch's metrics could not be sent: the logger is dropped there
    assert [int(row["epoch"]) for row in csv_rows(tmp_path / "run")] == [1, 2, 3]
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 3 and state["done"] and (tmp_path / "run" / "checkpoints" / "best.keras").is_file()


def _noted_at(run_dir: Path, text: str) -> float:
    """When run.log noted the first line containing ``text`` (seconds since the epoch)."""
    line = next(line for line in (run_dir / "run.log").read_text().splitlines() if text in line)
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))


@pytest.mark.slow
def test_wandb_online_with_its_server_down_costs_seconds_and_one_warning_line(tmp_path):
    need_module("wandb", "wandb")
    from segtrain.tracking.wandb_run import INIT_TIMEOUT_S

    down = {"WANDB_MODE": "online", "WANDB_BASE_URL": f"http://127.0.0.1:{free_port()}", "WANDB_API_KEY": "0" * 40}
    report = train(tmp_path, ["csv", "wandb"], env=down)
    _one_warning(report, "wandb")
    assert len(csv_rows(tmp_path / "run")) == EPOCHS  # no epoch lost
    run = tmp_path / "run"
    # From the tracker opening its loggers (the versions note) to the warning: W&B's init timeout, not its default 90 s.
    assert _noted_at(run, "tracking to wandb is off") - _noted_at(run, "version.segtrain") <= INIT_TIMEOUT_S + 20


def test_an_unknown_logger_is_one_line_with_the_closest_name(tmp_path):
    raw = {"data": {"format": "folders", "root": str(tmp_path), "num_classes": 2}, "runtime": {"loggers": ["csv", "mlfow"]}}
    with pytest.raises(SegtrainError, match=r"^<dict>: key 'runtime.loggers' entries must be among csv, tensorboard, "
                                            r"mlflow, wandb, got 'mlfow'; did you mean mlflow\?$"):
        from_dict(raw)

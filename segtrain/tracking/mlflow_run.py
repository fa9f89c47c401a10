"""An MLflow run: the config as parameters, facts as tags, scalars per step and per epoch, artifacts.

Scalars are sent in batches at each epoch end (and at close), not one request per step. A
resumed run continues the MLflow run its folder names (``tracking.json``); its parameters stay
those it was started with (MLflow refuses to change a parameter's value).

MLflow retries an unreachable server for minutes by default; unless the environment says
otherwise, requests here give up after a few seconds, so a server that is down costs one
warning line (the tracker drops the logger), never an epoch.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from segtrain.tracking.base import Logger, Picture, RunInfo, epoch_scalars

# MLflow's request settings (environment variables) when the user has not set them.
REQUEST_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
BATCH = 1000  # MLflow's limit on metrics per log_batch request
PARAMS_BATCH = 100  # ... and on parameters
VALUE_LIMIT = 6000  # characters of a parameter value


def metric_key(key: str) -> str:
    """A class name as MLflow accepts it in a metric key (letters, digits, ``_-. /``)."""
    return re.sub(r"[^\w\-. /]", "_", key)


class MlflowLogger(Logger):
    name = "mlflow"
    remote = True

    def open(self, run: RunInfo) -> str:
        for key, value in REQUEST_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow.entities import Metric, Param  # optional: runtime.loggers mlflow
        from mlflow.tracking import MlflowClient  # (same)

        self._metric, self._pending = Metric, []
        self.client = MlflowClient(run.mlflow_uri)
        self.run_dir = Path(run.run_dir)
        if run.resumed_id:
            self.run_id = run.resumed_id
            self.client.update_run(self.run_id, status="RUNNING")
            return self.run_id
        experiment = self.client.get_experiment_by_name(run.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(run.experiment)
        tags = {f"segtrain.{key}": value for key, value in run.facts.items()}
        if "git_commit" in run.facts:
            tags["mlflow.source.git.commit"] = run.facts["git_commit"]
        self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
        params = [Param(key, str(value)[:VALUE_LIMIT]) for key, value in run.params.items()]
        for start in range(0, len(params), PARAMS_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + PARAMS_BATCH])
        return self.run_id

    def _queue(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending.extend(self._metric(metric_key(k), v, now, step) for k, v in values.items())

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + BATCH])

    def step(self, step: int, values: dict[str, float]) -> None:
        self._queue(values, step)

    def epoch(self, history: list[dict]) -> None:
        self._queue(epoch_scalars(history[-1]), history[-1]["epoch"])
        self._flush()

    def pictures(self, epoch: int, step: int, pictures: list[Picture]) -> None:
        for picture in pictures:
            self.artifact(picture.path)

    def artifact(self, path: Path) -> None:
        folder = Path(path).parent.relative_to(self.run_dir).as_posix()
        self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)

    def close(self, status: str) -> None:
        self._flush()
        self.client.set_terminated(self.run_id, status)

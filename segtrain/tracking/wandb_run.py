"""A Weights & Biases run (online, or offline with ``WANDB_MODE=offline``): config and facts as its
config, scalars per step, epoch metrics and pictures at the epoch's last step, files saved with it.

A resumed run continues the W&B run its folder names (``tracking.json``). W&B's own console
capture is off: the console belongs to segtrain's progress lines. A server that is down or refuses
the run fails ``wandb.init`` within ``INIT_TIMEOUT_S``: one warning line, and training goes on.
"""

from __future__ import annotations

import os
from pathlib import Path

from segtrain.tracking.base import Logger, Picture, RunInfo, epoch_scalars

# How long wandb.init may wait for its service or server before the logger is dropped (W&B's own default is
# 90 s, retried behind a silent console): a server that is down costs these seconds. WANDB_INIT_TIMEOUT overrides.
INIT_TIMEOUT_S = 15


class WandbLogger(Logger):
    name = "wandb"
    remote = True

    def open(self, run: RunInfo) -> str:
        import wandb  # optional: runtime.loggers wandb

        self._image = wandb.Image
        os.environ.setdefault("WANDB_SILENT", "true")  # its login banner would be a second line beside a failure's warning
        timeout = {} if "WANDB_INIT_TIMEOUT" in os.environ else {"init_timeout": INIT_TIMEOUT_S}
        settings = wandb.Settings(console="off", silent=True, **timeout)
        self.run = wandb.init(project=run.experiment, name=run.name, id=run.resumed_id,
                              resume="allow" if run.resumed_id else None,
                              config={**run.params, **{f"run.{k}": v for k, v in run.facts.items()}},
                              settings=settings)
        return self.run.id

    def step(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def epoch(self, history: list[dict]) -> None:
        row = history[-1]
        self.run.log({**epoch_scalars(row), "epoch": row["epoch"]}, step=row["step"])

    def pictures(self, epoch: int, step: int, pictures: list[Picture]) -> None:
        self.run.log({p.tag: self._image(p.array, caption=f"epoch {epoch}") for p in pictures}, step=step)

    def artifact(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(Path(path).parent), policy="now")

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)

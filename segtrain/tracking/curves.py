"""``curves.png``: train loss and val mIoU per epoch, redrawn from the whole history each epoch."""

from __future__ import annotations

import math
from pathlib import Path

from segtrain.io_utils import atomic_write


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib  # plotting only when curves are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (after choosing the Agg backend)

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [r["loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="loss")
    val = [(r["epoch"], r["val_miou"]) for r in history if r.get("val_miou") is not None
           and not math.isnan(r["val_miou"])]
    if val:
        ax_miou.plot(*zip(*val), marker="o", color="tab:green")
    ax_miou.set(xlabel="epoch", ylabel="val mIoU", title="val mIoU", ylim=(0, 1))
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)

"""The pictures of a validation: the confusion matrix, and image | truth | prediction strips of a
fixed set of validation images (``runtime.log_images``), the strips of ``segtrain predict``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segtrain.data.formats.palette import ColorTable
from segtrain.data.loading.batches import numpy_batches
from segtrain.visualize import as_rgb, legend_entries, strip


def confusion_image(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> np.ndarray:
    """Rows (ground truth) normalised to 1, as a labelled heat map: (H, W, 3) uint8."""
    import matplotlib  # plotting only when pictures are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (after choosing the Agg backend)

    cm = np.asarray(matrix, np.float64)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(names)
    side = min(3 + 0.35 * n, 16)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
    if n <= 12:
        for (i, j), value in np.ndenumerate(share):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black")
    ax.set(xlabel="prediction", ylabel="truth", title="confusion (rows sum to 1)")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


class PredictionStrips:
    """The first ``count`` validation images (2-D images only), predicted again at each validation."""

    def __init__(self, batches: Callable[[], object], count: int, table: ColorTable, num_classes: int):
        self.batches, self.count, self.table, self.num_classes = batches, count, table, num_classes
        self._samples: list[tuple[np.ndarray, np.ndarray]] | None = None

    def _fixed(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._samples is None:
            self._samples = []
            with numpy_batches(self.batches()) as batches:
                for images, masks in batches:
                    if np.ndim(images) != 4 or len(self._samples) >= self.count:  # volumes and signals: no strip
                        break
                    self._samples.extend(zip(np.asarray(images), np.asarray(masks)))
            self._samples = self._samples[: self.count]
        return self._samples

    def __call__(self, predict: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
        """One strip per fixed image; ``predict``: a batch of images -> class indices."""
        strips = []
        for image, truth in self._fixed():
            labels = np.asarray(predict(image[None]))[0]
            panels = [("image", as_rgb(image)), ("truth", self.table.colorize(truth)),
                      ("prediction", self.table.colorize(labels))]
            entries = legend_entries(self.table, self.num_classes, void=bool((truth == 255).any()))
            strips.append(strip(panels, entries))
        return strips

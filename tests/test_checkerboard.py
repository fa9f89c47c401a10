"""Checkerboard score: a hand-computed case, the Odena et al. ordering, and the CLI table."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from segtrain.cli import main
from segtrain.models.checkerboard import block_score, periodic_energy_share
from segtrain.models.upsampling import TransposedConvUp


def test_share_of_an_alternating_pattern():
    mu, delta = 3.0, 0.5
    y = (mu + delta * (-1) ** np.arange(40)).reshape(1, 40, 1)
    assert periodic_energy_share(y, (2,)) == pytest.approx(delta**2 / (mu**2 + delta**2))
    assert periodic_energy_share(np.full((1, 12, 12, 2), 7.0), (2, 2)) == 0.0


def test_transposed_k3_s2_by_hand():
    """Kernel [a, b, c], stride 2, constant input: interior outputs alternate a + c and b."""
    a, b, c = 1.0, 2.0, 0.5
    layer = TransposedConvUp(1, 2, 3, use_bias=False)
    layer.build((1, 20, 1))
    layer.kernel.assign(np.array([a, b, c], "float32").reshape(3, 1, 1))
    y = np.asarray(layer(np.ones((1, 20, 1), "float32")))
    mu, delta = (a + b + c) / 2, (a + c - b) / 2
    assert periodic_energy_share(y, (2,), margin=4) == pytest.approx(delta**2 / (mu**2 + delta**2), rel=1e-5)


@pytest.mark.parametrize("rank,probe", [(2, "constant"), (2, "smooth"), (1, "smooth")])
def test_transposed_is_at_least_10x_worse_than_nearest_resize_conv(rank, probe):
    transposed = block_score("transposed", rank=rank, kernel_size=3, factor=2, trials=4, probe=probe)
    resize = block_score("resize_conv", rank=rank, kernel_size=3, factor=2, trials=4, probe=probe)
    assert transposed > 0.05
    assert transposed >= 10 * resize
    assert block_score("bilinear", rank=rank, trials=2, probe=probe) < 0.01 < block_score("unpool", rank=rank, trials=2)


def test_cli_prints_a_table(capsys):
    assert main(["checkerboard", "--blocks", "transposed", "resize_conv", "--trials", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[2:]}
    assert set(rows) == {"transposed", "resize_conv"} and rows["transposed"] > 10 * rows["resize_conv"]
    assert main(["checkerboard", "--blocks", "deconv"]) == 1
    assert "error: checkerboard: unknown block 'deconv'" in capsys.readouterr().err

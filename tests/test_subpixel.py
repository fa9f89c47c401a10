"""Sub-pixel resize-conv equals nearest-resize + 'same' conv (outputs and gradients)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from conftest import need_module
from segtrain.models.subpixel import phase_kernels, resize_conv_subpixel


def naive(x, kernel, factors):
    """Independent reference: keras.ops.repeat per axis, then keras.ops.conv 'same'."""
    for axis, s in enumerate(factors):
        x = ops.repeat(x, s, axis=1 + axis)
    return ops.conv(x, kernel, strides=1, padding="same")


def value_and_grads(fn, x, kernel, factors, cotangent):
    x = tf.convert_to_tensor(x)
    kernel = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x, kernel, factors)
        loss = tf.reduce_sum(y * cotangent)
    gx, gk = tape.gradient(loss, [x, kernel])
    return y.numpy(), gx.numpy(), gk.numpy()


SIZES = {1: (7,), 2: (5, 3), 3: (3, 5, 3)}
FACTORS = {
    1: [(2,), (3,)],
    2: [(2, 2), (3, 3), (2, 3)],
    3: [(2, 2, 2), (3, 3, 3), (3, 1, 2)],
}
CASES = [
    (rank, k, f)
    for rank in (1, 2, 3)
    for k in (1, 3, 4, 7)
    for f in FACTORS[rank]
    if not (rank == 3 and k == 7 and f == (3, 3, 3))  # covered by the other 3-D cases
]


@pytest.mark.parametrize("rank,k,factors", CASES)
def test_matches_naive_outputs_and_gradients(rank, k, factors):
    rng = np.random.default_rng(rank * 100 + k * 10 + sum(factors))
    cin, cout = 2, 3
    x = rng.standard_normal((2, *SIZES[rank], cin)).astype(np.float32)
    kernel = rng.standard_normal((*(k,) * rank, cin, cout)).astype(np.float32)
    out_shape = (2, *(n * s for n, s in zip(SIZES[rank], factors)), cout)
    cot = rng.standard_normal(out_shape).astype(np.float32)

    got = value_and_grads(resize_conv_subpixel, x, kernel, factors, cot)
    ref = value_and_grads(naive, x, kernel, factors, cot)

    assert got[0].shape == out_shape
    for name, g, r in zip(("output", "d/dx", "d/dkernel"), got, ref):
        assert g.shape == r.shape, name
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-5 * scale, err_msg=name)


def test_hand_computed_1d():
    # x = [1, 2, 3] upsampled x2 -> u = [1, 1, 2, 2, 3, 3]; 'same' cross-correlation
    # with w = [1, 10, 100]: out[m] = u[m-1] + 10 u[m] + 100 u[m+1], zero outside.
    x = np.array([1, 2, 3], np.float32).reshape(1, 3, 1)
    w = np.array([1, 10, 100], np.float32).reshape(3, 1, 1)
    out = np.asarray(resize_conv_subpixel(x, w, 2)).ravel()
    np.testing.assert_array_equal(out, [110, 211, 221, 322, 332, 33])


def issue_formula_1d(x, w):
    """The issue's phase formula for s = 2, odd k: out[2i+p] = sum_j x[i+j] v_p[j]."""
    k = len(w)
    r = k // 2
    n = len(x)
    out = np.zeros(2 * n)
    for p in range(2):
        v = {}
        for t in range(-r, r + 1):
            j = (p + t) // 2
            v[j] = v.get(j, 0.0) + w[t + r]
        for i in range(n):
            out[2 * i + p] = sum(x[i + j] * vj for j, vj in v.items() if 0 <= i + j < n)
    return out


@pytest.mark.parametrize("k", [3, 5, 7])
def test_issue_formula_1d(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal(9)
    w = rng.standard_normal(k)
    got = np.asarray(
        resize_conv_subpixel(
            x.astype(np.float32).reshape(1, -1, 1), w.astype(np.float32).reshape(k, 1, 1), 2
        )
    ).ravel()
    np.testing.assert_allclose(got, issue_formula_1d(x, w), atol=1e-5)


@pytest.mark.parametrize("k,s,taps", [(7, 2, 4), (3, 2, 2), (4, 2, 3), (7, 3, 3), (1, 4, 1)])
def test_phase_kernel_window_is_small(k, s, taps):
    # k = 7, s = 2: a 4x4 window per phase (64 taps per low-res pixel vs 196 naive).
    v = phase_kernels(np.ones((k, k, 2, 3), np.float32), s)
    assert tuple(v.shape) == (taps, taps, 2, s * s * 3)
    # every kernel tap lands exactly once in every phase
    per_phase = np.asarray(v).reshape(taps * taps, 2, s * s, 3).sum(axis=0)
    np.testing.assert_array_equal(per_phase, k * k)


@pytest.mark.parametrize("rank,factor,k", [(1, 3, 4), (2, (2, 3), 3), (3, 2, 3)])
def test_resize_conv_layer_subpixel_equals_naive_and_reloads(tmp_path, rank, factor, k):
    import keras

    from segtrain.models.upsampling import ResizeConv

    size = (5, 3, 3)[:rank]
    inp = keras.Input((*size, 2))
    fast = ResizeConv(3, factor=factor, kernel_size=k, bias_initializer="random_normal", name="up")
    model = keras.Model(inp, fast(inp))
    slow = ResizeConv(3, factor=factor, kernel_size=k, method="naive")
    slow(inp)
    slow.set_weights(fast.get_weights())
    assert fast.get_config()["method"] == "subpixel" and slow.get_config()["method"] == "naive"

    x = np.random.default_rng(rank).standard_normal((2, *size, 2)).astype(np.float32)
    y = np.asarray(model(x))
    np.testing.assert_allclose(y, np.asarray(slow(x)), atol=1e-5)

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("up").method == "subpixel"
    np.testing.assert_allclose(np.asarray(loaded(x)), y, atol=1e-6)


def test_resize_conv_rejects_unknown_method():
    from segtrain.models.upsampling import ResizeConv

    with pytest.raises(ValueError, match="method"):
        ResizeConv(3, method="fast")


def test_subpixel_exports_to_onnx_and_opencv(tmp_path):
    need_module("tf2onnx", "export")
    need_module("cv2", "export")
    import keras

    from segtrain.export import check_parity, export_model
    from segtrain.models.upsampling import ResizeConv

    inp = keras.Input((6, 5, 2))
    model = keras.Model(inp, ResizeConv(3, factor=2, kernel_size=7, bias_initializer="random_normal")(inp))
    path = export_model(model, "onnx", tmp_path / "m.onnx")
    report = check_parity(model, path, "onnx")  # the documented 1e-4 x max(1, max |logit|) (docs/export.md); measured 6.1e-5 of 283
    assert report.atol == 1e-4 and {r.runtime for r in report.results} == {"onnxruntime", "opencv-dnn"}
    assert report.ok, report.summary()

"""The zoo's layers against NumPy references written here (im2col, col2im, loops)."""

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from segtrain.errors import SegtrainError
from segtrain.models.blocks import ConvNormAct, IdentityInit, make_norm
from segtrain.models.padding import PadToMultiple
from segtrain.models.pooling import MaxPoolWithIndices, MaxUnpool
from segtrain.models.upsampling import (
    DECODERS,
    LEARNED_DECODERS,
    BilinearUpsample,
    ResizeConv,
    TransposedConvUp,
    upsampler,
)

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype("float32")


def same_pads(n, k, s, d=1):
    """TensorFlow's 'same' padding (before, after) for one axis."""
    k_eff = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def im2col_conv(x, w, strides, pads, dilation=1):
    """Correlation of a channels-last batch, any rank: gather patches, one matmul."""
    rank = x.ndim - 2
    ks = w.shape[:rank]
    x = np.pad(x, [(0, 0)] + list(pads) + [(0, 0)])
    out = [(x.shape[1 + i] - (ks[i] - 1) * dilation - 1) // strides[i] + 1 for i in range(rank)]
    cols = []
    for offset in itertools.product(*[range(k) for k in ks]):
        idx = tuple(slice(o * dilation, o * dilation + (n - 1) * s + 1, s) for o, n, s in zip(offset, out, strides))
        cols.append(x[(slice(None),) + idx + (slice(None),)])
    patches = np.stack(cols, axis=-2).reshape(x.shape[0], *out, -1)  # (B, out..., k^r*cin)
    return patches @ w.reshape(-1, w.shape[-1])


def col2im_transpose(x, w, s):
    """Transposed 2-D conv by scatter-add, then TF's 'same' crop to exactly s x the input."""
    b, h, wd, _ = x.shape
    kh, kw, cout, _ = w.shape
    full = np.zeros((b, (h - 1) * s + kh, (wd - 1) * s + kw, cout), "float64")
    for i, j in itertools.product(range(h), range(wd)):
        full[:, i * s:i * s + kh, j * s:j * s + kw] += np.einsum("bc,xyoc->bxyo", x[:, i, j], w)
    out = np.zeros((b, h * s, wd * s, cout))
    top, left = max(kh - s, 0) // 2, max(kw - s, 0) // 2
    crop = full[:, top:top + h * s, left:left + wd * s]
    out[:, :crop.shape[1], :crop.shape[2]] = crop
    return out


@pytest.mark.parametrize("strides,padding,kernel", [(2, "valid", 3), (2, "same", 3), (1, "same", 4), (3, "same", 5)])
def test_conv2d_matches_im2col(strides, padding, kernel):
    x = rand(2, 9, 8, 3)
    layer = keras.layers.Conv2D(4, kernel, strides=strides, padding=padding, use_bias=False)
    got = np.asarray(layer(x))
    w = np.asarray(layer.kernel)
    pads = [same_pads(n, kernel, strides) if padding == "same" else (0, 0) for n in x.shape[1:3]]
    np.testing.assert_allclose(got, im2col_conv(x, w, (strides, strides), pads), atol=1e-4)


@pytest.mark.parametrize("shape,kernel,dilation", [((2, 11, 3), 3, 2), ((2, 7, 6, 3), 3, 2), ((1, 4, 5, 6, 2), 3, 1)])
def test_conv_norm_act_is_dilated_same_conv_any_rank(shape, kernel, dilation):
    x = rand(*shape)
    layer = ConvNormAct(5, kernel, dilation_rate=dilation, norm="none", activation="relu")
    got = np.asarray(layer(x))
    pads = [same_pads(n, kernel, 1, dilation) for n in shape[1:-1]]
    want = im2col_conv(x, np.asarray(layer.kernel), (1,) * (len(shape) - 2), pads, dilation) + np.asarray(layer.bias)
    np.testing.assert_allclose(got, np.maximum(want, 0), atol=1e-4)
    assert layer.kernel.shape == (kernel,) * (len(shape) - 2) + (shape[-1], 5)


@pytest.mark.parametrize("kernel,stride", [(1, 2), (2, 2), (3, 2), (4, 2), (5, 3), (2, 3)])
def test_transposed_matches_col2im(kernel, stride):
    x = rand(2, 4, 5, 3)
    keras_layer = keras.layers.Conv2DTranspose(4, kernel, strides=stride, padding="same", use_bias=False)
    ours = TransposedConvUp(4, stride, kernel, use_bias=False)
    ours.build(x.shape)
    ours.kernel.assign(rand(*ours.kernel.shape))
    got = np.asarray(ours(x))
    assert got.shape == (2, 4 * stride, 5 * stride, 4)  # exactly factor x input
    np.testing.assert_allclose(got, col2im_transpose(x, np.asarray(ours.kernel), stride), atol=1e-4)
    if kernel >= stride:  # Keras' own layer pads differently when k < s; compare where both agree
        keras_out = np.asarray(keras_layer(x))
        np.testing.assert_allclose(keras_out, col2im_transpose(x, np.asarray(keras_layer.kernel), stride), atol=1e-4)


def test_transposed_any_rank_shape():
    for shape, factor in [((1, 5, 2), 4), ((1, 3, 2, 5, 2), (2, 1, 3))]:
        y = TransposedConvUp(3, factor, 3)(rand(*shape))
        f = (factor,) * (len(shape) - 2) if isinstance(factor, int) else factor
        assert y.shape == (1,) + tuple(n * k for n, k in zip(shape[1:-1], f)) + (3,)


@pytest.mark.parametrize("shape,factor,kernel", [((2, 6, 3), 3, 3), ((2, 5, 4, 3), 2, 3), ((2, 3, 5, 2), (2, 3), 4),
                                                 ((1, 3, 2, 4, 2), 2, 3)])
def test_resize_conv_matches_repeat_then_conv(shape, factor, kernel):
    x = rand(*shape)
    layer = ResizeConv(4, factor, kernel)
    got = np.asarray(layer(x))
    rank = len(shape) - 2
    f = (factor,) * rank if isinstance(factor, int) else factor
    up = x
    for axis, k in enumerate(f, start=1):
        up = np.repeat(up, k, axis=axis)
    pads = [same_pads(n, kernel, 1) for n in up.shape[1:-1]]
    want = im2col_conv(up, np.asarray(layer.kernel), (1,) * rank, pads) + np.asarray(layer.bias)
    assert got.shape == up.shape[:-1] + (4,)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert [w.name for w in layer.weights] == ["kernel", "bias"]
    assert layer.kernel.shape == (kernel,) * rank + (shape[-1], 4)


def np_linear_upsample(x, factors):
    """Half-pixel-centre linear interpolation per axis with np.interp (clamps at the edges)."""
    for axis, f in enumerate(factors, start=1):
        n = x.shape[axis]
        src = (np.arange(n * f) + 0.5) / f - 0.5
        x = np.apply_along_axis(lambda v: np.interp(src, np.arange(n), v), axis, x)
    return x


def test_bilinear_upsample_matches_tf_image_resize_and_numpy():
    x = rand(2, 5, 7, 3)
    got = np.asarray(BilinearUpsample(4)(x))
    np.testing.assert_allclose(got, tf.image.resize(x, (20, 28), "bilinear").numpy(), atol=1e-5)
    np.testing.assert_allclose(got, np_linear_upsample(x, (4, 4)), atol=1e-5)
    for shape, f in [((2, 6, 3), (3,)), ((1, 3, 4, 2, 2), (2, 3, 2))]:
        x = rand(*shape)
        np.testing.assert_allclose(np.asarray(BilinearUpsample(f)(x)), np_linear_upsample(x, f), atol=1e-5)
    layer = ResizeConv(2, 2, 1, interpolation="bilinear", use_bias=False)
    y = np.asarray(layer(x := rand(1, 4, 4, 3)))
    np.testing.assert_allclose(y, np_linear_upsample(x, (2, 2)) @ np.asarray(layer.kernel)[0, 0], atol=1e-5)


def test_layer_norm_is_per_sample_over_all_axes_with_per_channel_affine():
    norm = make_norm("layer", 6)
    x = rand(3, 5, 4, 6) * 3 + 1
    norm.build(x.shape)
    gamma, beta = rand(6), rand(6)
    norm.gamma.assign(gamma)
    norm.beta.assign(beta)
    assert norm.gamma.shape == (6,) and norm.beta.shape == (6,)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    want = (x - mean) / np.sqrt(var + norm.epsilon) * gamma + beta
    np.testing.assert_allclose(np.asarray(norm(x)), want, atol=1e-4)
    other = rand(2, 9, 3, 6)  # same weights work for any spatial size
    assert norm(other).shape == other.shape


@pytest.mark.parametrize("kind,groups", [("group", 2), ("instance", 6)])
def test_group_and_instance_norm_against_numpy(kind, groups):
    norm = make_norm(kind, 6, groups=2) if kind == "group" else make_norm(kind, 6)
    x = rand(2, 4, 5, 6) * 2 - 1
    got = np.asarray(norm(x))
    g = x.reshape(2, 4, 5, groups, 6 // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    np.testing.assert_allclose(got, ((g - mean) / np.sqrt(var + norm.epsilon)).reshape(x.shape), atol=1e-4)


def test_norm_factory_kinds():
    assert isinstance(make_norm("batch", 8), keras.layers.BatchNormalization)
    assert make_norm("none", 8) is None
    assert make_norm("group", 64).groups == 32 and make_norm("group", 12).groups == 4
    with pytest.raises(Exception, match="model.norm"):
        make_norm("weight", 8)


def np_pool_unpool(x, pool):
    """Loop reference: windows of ``pool`` (ceil at the edges), first max in row-major order."""
    rank = x.ndim - 2
    out_shape = tuple(-(-n // p) for n, p in zip(x.shape[1:-1], pool))
    pooled = np.zeros((x.shape[0],) + out_shape + (x.shape[-1],), x.dtype)
    unpooled = np.zeros_like(x)
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[-1])):
        for cell in itertools.product(*[range(n) for n in out_shape]):
            best, where = None, None
            for offset in itertools.product(*[range(p) for p in pool]):
                pos = tuple(i * p + o for i, p, o in zip(cell, pool, offset))
                if all(q < n for q, n in zip(pos, x.shape[1:-1])):
                    v = x[(b,) + pos + (c,)]
                    if best is None or v > best:  # strict: ties keep the first
                        best, where = v, pos
            pooled[(b,) + cell + (c,)] = best
            unpooled[(b,) + where + (c,)] = best
    assert rank == len(pool)
    return pooled, unpooled


@pytest.mark.parametrize("shape,pool", [((2, 6, 8, 3), 2), ((2, 5, 7, 2), 2), ((1, 7, 2), 3), ((1, 3, 5, 4, 2), 2),
                                        ((1, 5, 6, 2), (2, 3))])
def test_max_pool_and_unpool_match_loop_with_odd_sizes_and_ties(shape, pool):
    x = RNG.integers(-2, 2, shape).astype("float32")  # few values: many ties
    p = (pool,) * (len(shape) - 2) if isinstance(pool, int) else pool
    want_pooled, want_unpooled = np_pool_unpool(x, p)
    pooled, indices = MaxPoolWithIndices(pool)(x)
    np.testing.assert_array_equal(np.asarray(pooled), want_pooled)
    assert indices.dtype == "int32"
    unpooled = MaxUnpool(pool)([pooled, indices, x])
    np.testing.assert_array_equal(np.asarray(unpooled), want_unpooled)


def test_max_pool_all_negative_odd_edge_is_not_padding():
    x = np.full((1, 3, 3, 1), -5.0, "float32")
    pooled, _ = MaxPoolWithIndices(2)(x)
    np.testing.assert_array_equal(np.asarray(pooled), np.full((1, 2, 2, 1), -5.0))
    assert np.isfinite(np.asarray(MaxUnpool(2)([pooled, _, x]))).all()


def test_identity_init_passes_input_through():
    x = rand(1, 6, 7, 4)
    layer = ConvNormAct(4, 3, dilation_rate=2, norm="none", activation=None, kernel_initializer=IdentityInit())
    np.testing.assert_allclose(np.asarray(layer(x)), x, atol=1e-6)
    wide = IdentityInit()((3, 3, 2, 4))  # generalised: each input feeds its group of outputs
    np.testing.assert_allclose(np.asarray(wide)[1, 1], [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])


def test_upsampler_factory_builds_each_decoder_and_rejects_others():
    kinds = {"unpool": MaxUnpool, "bilinear": BilinearUpsample, "resize_conv": ResizeConv,
             "transposed": TransposedConvUp}
    assert set(kinds) == set(DECODERS) and set(LEARNED_DECODERS) < set(DECODERS)
    x = rand(2, 5, 6, 3)
    for decoder, cls in kinds.items():
        layer = upsampler(decoder, 2, 4, 3, use_bias=False, kernel_initializer="zeros", name=f"up_{decoder}")
        assert type(layer) is cls and layer.name == f"up_{decoder}"
        if decoder == "unpool":
            pooled, indices = MaxPoolWithIndices(2)(x)
            y = layer([pooled, indices, x])
        else:
            y = layer(x)
        channels = 4 if decoder in LEARNED_DECODERS else 3
        assert y.shape == (x.shape if decoder == "unpool" else (2, 10, 12, channels)), decoder
        if decoder in LEARNED_DECODERS:
            assert layer.bias is None and not np.asarray(layer.kernel).any()
    with pytest.raises(SegtrainError, match=r"model.decoder: unknown decoder 'deconv'; use one of unpool, "):
        upsampler("deconv", 2, 4)


@pytest.mark.parametrize("spatial", [(5, 8, 6), (None, None, None), (13, 6), (9,)])
def test_pad_to_multiple_then_same_conv_in_a_compiled_graph(spatial):
    """Regression (issue 13): a ``Pad`` feeding a 'same' ``Conv3D`` inside ``tf.function`` is
    fused by TF's oneDNN rewrite (AVX-512 CPUs) into a 'valid' conv, which broke 3-D
    SegNet-Basic's ``predict``. Checked against NumPy: zero-pad to a multiple of 8, then conv."""
    n = tuple(s or 5 for s in spatial)
    x = rand(2, *n, 2)
    pad = PadToMultiple(8)
    conv = ConvNormAct(3, 3, norm="none", activation=None, use_bias=True, bias_initializer="random_normal")
    compiled = tf.function(lambda t: conv(pad(t)), input_signature=[tf.TensorSpec((None, *spatial, 2))])
    got = np.asarray(compiled(x))
    padded = np.pad(x, [(0, 0)] + [(0, -k % 8) for k in n] + [(0, 0)])
    assert got.shape == padded.shape[:-1] + (3,)
    kernel, bias = (np.asarray(w) for w in conv.weights)
    want = im2col_conv(padded, kernel, (1,) * len(n), [(1, 1)] * len(n)) + bias
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(pad(x)), padded)

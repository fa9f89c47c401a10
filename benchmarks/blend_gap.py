"""Sliding-window blends vs whole-volume inference: a 6-layer 3x3x3 conv stack (receptive radius 6), random weights.

Not a speed benchmark: how far `gaussian` and `margin` blending land from whole-array logits
(window 32, strides 24/16/8 on a 64x48x40 volume). Run: PYTHONPATH=. python benchmarks/blend_gap.py
"""
import keras
import numpy as np

from segtrain.inference import predict_logits

keras.utils.set_random_seed(0)
layers = [keras.Input((None, None, None, 2))] + [keras.layers.Conv3D(8, 3, padding="same", activation="relu") for _ in range(5)] + [keras.layers.Conv3D(5, 3, padding="same")]
m = keras.Sequential(layers)
x = np.random.default_rng(0).normal(size=(64, 48, 40, 2)).astype(np.float32)
whole = predict_logits(m, x)
scale = np.abs(whole).mean()
for blend in ("gaussian", "margin"):
    for stride in (24, 16, 8):
        out = predict_logits(m, x, window=32, stride=stride, blend=blend)
        print(f"{blend:8s} window 32 stride {stride:2d}: mean|diff|/mean|logit| {np.abs(out - whole).mean() / scale:.5f}  "
              f"max|diff|/mean|logit| {np.abs(out - whole).max() / scale:.4f}  argmax agreement {(np.argmax(out, -1) == np.argmax(whole, -1)).mean():.5f}")

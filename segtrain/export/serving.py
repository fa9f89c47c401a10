"""The function every TensorFlow-based format exports: raw pixels in, logits out, in the chosen layout.

The graph takes the same raw pixels as the Keras model (float32, 0..255 RGB; the
normalisation is the model's first layer, so it is inside the graph) and returns logits at
the input's spatial size. ``nchw`` puts a transpose at both ends of the graph: input
``(N, C, H, W)`` as ``cv2.dnn.blobFromImage`` builds it, output ``(N, classes, H, W)``.
"""

from __future__ import annotations

from segtrain.export.shapes import exported_layout, perms

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def serving_fn(model, nchw: bool):
    """``x -> logits`` in the exported layout (transposes only at the graph's two ends)."""
    import tensorflow as tf  # optional dependency: TensorFlow (every export converts through it)

    to_last, to_first = perms(len(model.input_shape) - 2)

    def serve(x):
        if nchw:
            x = tf.transpose(x, to_last)
        y = model(x, training=False)
        return tf.transpose(y, to_first) if nchw else y

    return serve


def signature(shape_nhwc: tuple, nchw: bool):
    """The ``tf.TensorSpec`` of the exported input, named ``image``."""
    import tensorflow as tf  # optional dependency: TensorFlow

    return tf.TensorSpec(exported_layout(shape_nhwc, nchw), tf.float32, name=INPUT_NAME)

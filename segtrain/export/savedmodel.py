"""SavedModel export: endpoint ``serve`` (also ``serving_default``) maps ``image`` to ``{"logits": ...}``.

Needs only TensorFlow; the parity check reloads it in TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from segtrain.export.formats import ExportFormat, Runners, register_export_format
from segtrain.export.serving import OUTPUT_NAME, serving_fn, signature


def write(model, shape: tuple, nchw: bool, output: Path) -> None:
    """Write ``model`` as a SavedModel directory at ``output`` through Keras's ``ExportArchive``."""
    import keras  # loads the backend (TensorFlow for export): only when a SavedModel is written

    serve = serving_fn(model, nchw)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: {OUTPUT_NAME: serve(x)}, input_signature=[signature(shape, nchw)])
    archive.write_out(str(output), verbose=False)


def runners(path: Path) -> Runners:
    """The SavedModel reloaded in TensorFlow (the object keeps its variables alive)."""
    import tensorflow as tf  # optional dependency: TensorFlow

    loaded = tf.saved_model.load(str(path))
    spec = loaded.serve.input_signature[0]
    return Runners(
        input_shape=[d if d is not None else -1 for d in spec.shape.as_list()],
        run={"tensorflow": lambda x: loaded.serve(tf.constant(x))[OUTPUT_NAME].numpy()},
    )


SAVEDMODEL = register_export_format(ExportFormat("savedmodel", suffix="_savedmodel", write=write, runners=runners))

"""Data layer: dataset layouts, palette-correct decoding, augmentation, tf.data pipeline."""

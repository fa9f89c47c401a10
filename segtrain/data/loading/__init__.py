"""Loading: what sits at each position of an epoch (``plans.py``, ``patch_plans.py``, ``seeds.py``)
and the batch sources that run it: tf.data (``tf_batches.py``), the TensorFlow-free NumPy
loader (``numpy_batches.py``) and ``batches.py``, which picks one for the running backend."""

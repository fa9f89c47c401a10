"""`segtrain serve`: a model behind HTTP (FastAPI + uvicorn) and a page to try it.

One idea per module:

- ``runners``: the table ``RUNNERS`` (a Keras checkpoint, ONNX in onnxruntime, TFLite), each an image -> mask runner;
- ``uploads``: an uploaded image decoded, or refused with a 4xx and one message;
- ``batching``: ``MicroBatcher``, requests that arrive together share a forward pass;
- ``app``: ``create_app``, the FastAPI service (``/predict``, ``/health``, ``/``);
- ``page``: the HTML page at ``/``;
- ``cli``: the ``segtrain serve`` command.

``runners``, ``uploads`` and ``batching`` need no web framework; ``app`` needs the ``serve`` extra.
"""

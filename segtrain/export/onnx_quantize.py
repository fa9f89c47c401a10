"""int8 ONNX: onnxruntime's static post-training quantization (QDQ), calibrated on real images.

QDQ keeps every op of the float graph and brackets the quantized ones with
QuantizeLinear/DequantizeLinear pairs, so one file runs in onnxruntime (which fuses the pairs
into integer kernels) and in OpenCV DNN. Activations and weights are signed int8 (S8S8,
onnxruntime's recommended QDQ setting on x86-64), weights per output channel, ranges by
min/max over the calibration images. A convolution or matrix product left in float (the
quantizer skipped it) is reported, never written silently.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.export.serving import INPUT_NAME

COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}  # where int8 saves the time; elementwise ops may stay float


def float_compute_nodes(proto) -> list[str]:
    """Names of the convolutions and matrix products whose inputs are not all dequantized int8 tensors."""
    dequantized = {out for n in proto.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return [n.name or n.op_type for n in proto.graph.node
            if n.op_type in COMPUTE_OPS and not all(i in dequantized for i in n.input[:2])]


def quantize_int8(proto, output: Path, inputs: Iterable[np.ndarray]):
    """Write the int8 QDQ version of the float ONNX ``proto`` to ``output``; returns the quantized proto."""
    import onnx  # optional dependency: onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # optional dependency: onnxruntime

    inputs = list(inputs)
    # Running min/max over chunks of images bounds the calibrator's memory (it keeps every
    # intermediate tensor of a chunk); onnxruntime 1.32 fails ("No data is collected") when the
    # image count is a multiple of the chunk, so the chunk is the first size from 8 that is not.
    chunk = next(k for k in range(8, len(inputs) + 2) if len(inputs) % k)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(inputs)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {INPUT_NAME: x}

    with tempfile.TemporaryDirectory() as tmp:  # the calibrator's augmented copy of the model goes there
        float_path = Path(tmp) / "float.onnx"
        onnx.save(proto, str(float_path))
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)  # its advice to pre-process: tf2onnx already folded BatchNorm and fixed the shapes
        try:
            quantize_static(str(float_path), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            extra_options={"CalibMaxIntermediateOutputs": chunk})
        finally:
            root.setLevel(level)
    quantized = onnx.load(str(output))
    left = float_compute_nodes(quantized)
    if left:
        output.unlink()
        raise SegtrainError(f"ONNX int8 export: {len(left)} convolution/matmul nodes stay float32 ({', '.join(left[:3])}"
                            f"{', ...' if len(left) > 3 else ''}), so the file would not be quantized; export with --quantize none")
    return quantized

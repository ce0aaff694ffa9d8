"""``python -m export int8-ceiling``: how much faster INT8 convolution can be than FP32 on this CPU.

The INT8 CPU flavour of a model can never be faster, relative to FP32, than ONNX Runtime's INT8
convolution kernel is relative to its FP32 one: convolutions are most of the work and everything
else (attention, pooling, Quantize/DequantizeLinear) only adds to the INT8 side. This benchmark
times single 3x3 convolutions with the shapes of the CBAM-ResNet's stages, in FP32 and quantized
exactly as the exported model is (``export.precision.to_int8``, flavour ``cpu-vnni``; a lone
convolution reading the input is all there is, so nothing is kept in float), on the same
session settings as the runtime. The ratio it prints is the ceiling for ``INT8 / FP32`` here.

Why the ceiling depends on the CPU: ONNX Runtime's FP32 convolutions use blocked AVX2/AVX-512 FMA
kernels; its INT8 ones multiply u8 x s8 with ``vpmaddubsw`` on AVX2 (two instructions per
multiply-add pair) and with a single ``vpdpbusd`` on CPUs with VNNI (AVX512-VNNI or AVX-VNNI),
which is where INT8 reaches 2-4x.
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.precision import to_int8
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.onnx_session import make_session
from runtime.probe import interleaved

# (channels, spatial size) of a ResNet-18's 3x3 convolutions (stage k runs at input/2^(k+2) with
# width * 2^k channels): the CPU demo's width 16 at 96 px, then width 64 at 256 px (the default).
DEFAULT_SHAPES = ((16, 24), (32, 12), (64, 6), (128, 3), (64, 64), (128, 32), (256, 16), (512, 8))


def conv_model(channels, size, seed=0):
    """A Conv(3x3, C->C, pad 1) + Relu graph with the runtime's input/output names."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((channels, channels, 3, 3)) * (2.0 / (9 * channels)) ** 0.5).astype(np.float32)
    b = np.zeros(channels, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", [INPUT_NAME, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], [PROBS])],
        "conv", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, ["batch", channels, size, size])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    # IR version 8 goes with opset 17 (onnx's own default may be newer than ONNX Runtime reads).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _rates(paths, x, seconds, threads):
    """Images/s of each file (median call), timed in turns as every benchmark here is
    (runtime.probe.interleaved), so a change in the machine's load hits FP32 and INT8 alike."""
    sessions = [make_session(p, "cpu", threads) for p in paths]
    feed = {INPUT_NAME: x}
    times = interleaved([lambda s=s: s.run(None, feed) for s in sessions], seconds, block=min(1.0, seconds / 3))
    return [len(x) / float(np.median(t)) for t in times]


def ceiling(shapes=DEFAULT_SHAPES, batch_size=32, seconds=2.0, threads=0):
    """One row per shape: FP32 and INT8 images/s and their ratio."""
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for channels, size in shapes:
            fp32 = Path(tmp) / f"conv{channels}x{size}.onnx"
            int8 = Path(tmp) / f"conv{channels}x{size}.int8.onnx"
            onnx.save(conv_model(channels, size), str(fp32))
            x = rng.standard_normal((batch_size, channels, size, size)).astype(np.float32)
            to_int8(fp32, int8, x[:16], flavour="cpu-vnni", keep_float=())
            f, i = _rates((fp32, int8), x, seconds, threads)
            rows.append({"channels": channels, "size": size, "batch_size": batch_size,
                         "fp32_per_s": f, "int8_per_s": i, "ratio": i / f})
    return rows


def format_rows(rows):
    lines = [f"{'conv 3x3':<18}{'batch':>6}{'FP32 /s':>10}{'INT8 /s':>10}{'INT8/FP32':>11}"]
    for r in rows:
        lines.append(f"{r['channels']:>4} ch @ {r['size']:>3} px{r['batch_size']:>6}{r['fp32_per_s']:>10.1f}"
                     f"{r['int8_per_s']:>10.1f}{r['ratio']:>10.2f}x")
    return "\n".join(lines)

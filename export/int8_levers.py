"""``python -m export int8-levers``: what each INT8 setting does to speed and probabilities on this
CPU, one lever at a time, against the FP32 file of a deployment (docs/int8.md holds the tables).

Each row changes one thing from the ``cpu-vnni`` flavour as exported (``export.precision``):
which parts stay in float, CBAM's pooling rewrites (``export.int8_graph``), ``reduce_range``,
per-channel weights, QDQ vs QOperator, and the ONNX Runtime session options (graph optimisation
level, threads, spinning) applied to both files.
FP32 and INT8 are timed in turns of about a second (``runtime.probe.interleaved``), so machine
load hits both alike; the ratio is of the median calls. |dp| is against the FP32 file on run images the calibration did not see.
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantFormat

from export.precision import to_int8
from runtime.errors import DataError, loading
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.probe import interleaved

QUANT_LEVERS = {
    "cpu-vnni as exported": {},
    "CBAM all in float": {"keep_float": ("attention", "head"), "integer_pooling": False},
    "CBAM pooling not rewritten": {"integer_pooling": False},
    "CBAM gates quantized too": {"keep_float": ("head",)},
    "head quantized too": {"keep_float": ("attention-gates",)},
    "all quantized": {"keep_float": ()},
    "stem in float too": {"keep_float": ("attention-gates", "head", "stem")},
    "reduce_range (cpu-avx2)": {"reduce_range": True},
    "per-tensor weights": {"per_channel": False},
    "QOperator format": {"quant_format": QuantFormat.QOperator},
}
_LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
           "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
SESSION_LEVERS = {
    "graph optimisation extended": {"level": "extended"},
    "graph optimisation basic": {"level": "basic"},
    "1 intra-op thread": {"threads": 1},
    "spin-waiting (ONNX Runtime's default)": {"spinning": True},
}


def chosen(names):
    """``--only``'s names, checked against the levers (None: all of them)."""
    valid = [*QUANT_LEVERS, *SESSION_LEVERS]
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown lever {name!r}; valid: {'; '.join(valid)}")
    return names or None


def read_fp32(path):
    """Refuse, in one line naming ``path``, what cannot be the FP32 file the levers quantize."""
    if not Path(path).is_file():
        raise DataError(path, "ONNX file not found")
    with loading(path, "not an ONNX model"):
        model = onnx.load(str(path))
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node)
    if quantized or any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        raise DataError(path, "a reduced-precision file; give the FP32 one (DEPLOY/ensemble.onnx or DEPLOY/fold0.onnx)")


def run_images(data, calib_images, run):
    """The images export onnx calibrates on (its default --seed) and as many others of the run to
    measure |dp| on."""
    if not data.available:
        raise ValueError(f"{run}: the run's images are not reachable; the levers need them to calibrate")
    if calib_images >= len(data.ids):
        raise ValueError(f"--calib-images {calib_images}: the run has {len(data.ids)} images; "
                         "the levers need others left to compare on")
    calib_ids = data.calibration_ids(calib_images)
    taken = set(calib_ids)
    rest = [i for i in data.ids if i not in taken]
    picked = np.random.default_rng(0).choice(len(rest), min(calib_images, len(rest)), replace=False)
    return data.images(calib_ids), data.images([rest[i] for i in sorted(picked)])


def session(path, level="all", threads=0, spinning=False):
    """A CPU session; the defaults are runtime.onnx_session.make_session's."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _rates(sessions, x, seconds):
    """Images/s of each session (median call), timed in turns (runtime.probe.interleaved)."""
    times = interleaved([lambda s=s: s.run([PROBS], {INPUT_NAME: x}) for s in sessions], seconds)
    return [len(x) / float(np.median(t)) for t in times]


def _row(name, fp32, int8, held, batch_sizes, seconds, report):
    ref, got = (s.run([PROBS], {INPUT_NAME: held})[0] for s in (fp32, int8))
    diff = np.abs(got - ref)
    rows = []
    for b in batch_sizes:
        x = np.ascontiguousarray(np.resize(held, (b, *held.shape[1:])))
        f, i = _rates([fp32, int8], x, seconds)
        rows.append({"lever": name, "batch_size": b, "fp32_per_s": f, "int8_per_s": i, "ratio": i / f,
                     "p99_abs_dp": float(np.percentile(diff, 99)), "max_abs_dp": float(diff.max())})
    if report:
        report(rows)
    return rows


def levers(fp32_path, calib, held, batch_sizes=(1, 16), seconds=3.0, only=None, report=None):
    """Rows of (lever, batch size, FP32 and INT8 images/s, ratio, p99 and max |dp|); ``report``
    gets each lever's rows as they come."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.onnx"
        to_int8(fp32_path, base, calib, "cpu-vnni")
        for name, overrides in QUANT_LEVERS.items():
            if only and name not in only:
                continue
            path = base if not overrides else to_int8(fp32_path, Path(tmp) / f"{len(rows)}.onnx", calib,
                                                      "cpu-vnni", **overrides)
            rows += _row(name, session(fp32_path), session(path), held, batch_sizes, seconds, report)
        for name, options in SESSION_LEVERS.items():
            if not only or name in only:
                rows += _row(name, session(fp32_path, **options), session(base, **options), held, batch_sizes,
                             seconds, report)
    return rows


HEADER = f"{'lever':<34}{'batch':>6}{'FP32 /s':>10}{'INT8 /s':>10}{'INT8/FP32':>11}{'p99 |dp|':>10}{'max |dp|':>10}"


def format_rows(rows):
    lines = []
    for r in rows:
        lines.append(f"{r['lever']:<34}{r['batch_size']:>6}{r['fp32_per_s']:>10.1f}{r['int8_per_s']:>10.1f}"
                     f"{r['ratio']:>10.2f}x{r['p99_abs_dp']:>10.4f}{r['max_abs_dp']:>10.4f}")
    return "\n".join(lines)

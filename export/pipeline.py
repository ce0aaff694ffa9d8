"""``python -m export onnx``: every fold, the ensemble, the asked-for precisions, then model.json."""

import logging
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from export.onnx_export import (FP32_TOLERANCE, PRECISIONS, EnsembleGraph, Exported, ExportError, FoldGraph,
                                PARITY_BATCHES, RunData, eval_subset, export_graph, load_models, oof_f1, parity)
from export.precision import to_fp16, to_int8
from runtime.model_spec import LOGITS, PROBS, sha256_of, write_model_spec
from train.run import Run

log = logging.getLogger(__name__)

# Reported, not enforced: how far reduced precision may move a probability before we call it
# out in the report (the F1 next to FP32's is the figure that matters).
TOLERANCE = {"fp16": 1e-2, "int8": 0.1}


def _versions():
    try:
        import tensorrt

        trt = tensorrt.__version__
    except ImportError:
        trt = None
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "tensorrt": trt, "python": platform.python_version()}


INT8_TARGETS = ("cpu", "tensorrt")


def export_run(run, out, precisions=("fp32",), calib_images=64, seed=0, report=print, eval_images=3000,
               int8_targets=INT8_TARGETS):
    """Export a finished run; returns the ModelSpec written to OUT/model.json."""
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown precision {bad[0]!r}; valid: {', '.join(PRECISIONS)}")
    bad = [t for t in int8_targets if t not in INT8_TARGETS]
    if bad or not int8_targets:
        raise ValueError(f"unknown INT8 target {bad[0] if bad else ''!r}; valid: {', '.join(INT8_TARGETS)}")
    run, out = Run(run), Path(out)
    cfg, pp, thresholds = run.config, run.preprocess, run.thresholds()
    models, ckpt_paths = load_models(run), run.checkpoints()
    out.mkdir(parents=True, exist_ok=True)
    data = RunData(run)
    real = (data.images(data.sample_ids(max(PARITY_BATCHES), seed)) if data.available
            else np.zeros((0, 4, pp.size, pp.size), np.float32))
    if not data.available:
        log.warning("the run's images are not reachable; parity uses random inputs only and F1 is not measured")
    y = run.targets()[2] if data.available else None
    subset = eval_subset(len(data.ids), eval_images, seed) if y is not None else None

    graphs = {k: FoldGraph(m) for k, m in enumerate(models)}
    ensemble = EnsembleGraph(models).eval()
    exported = []

    # FP32: the reference every other variant is derived from and compared with.
    fp32 = {}
    for k, graph in graphs.items():
        path = export_graph(graph, out / f"fold{k}.onnx", pp.size, [LOGITS, PROBS])
        fp32[k] = Exported(path, "fold", k, "fp32", "any", parity(graph, path, real, seed))
    path = export_graph(ensemble, out / "ensemble.onnx", pp.size, [PROBS])
    fp32["ensemble"] = Exported(path, "ensemble", -1, "fp32", "any", parity(ensemble, path, real, seed))
    worst = max(e.parity["max_abs_diff"] for e in fp32.values())
    if worst > FP32_TOLERANCE:
        lines = [f"{e.path.name}: max |p_torch - p_onnx| = {e.parity['max_abs_diff']:.2e}" for e in fp32.values()]
        raise ExportError(f"FP32 parity above {FP32_TOLERANCE:g}: " + "; ".join(lines))
    exported += fp32.values()
    if y is not None:
        fp32["ensemble"].macro_f1 = {"note": "the ensemble saw every image in training: no out-of-fold F1"}
        f1, _ = oof_f1({k: fp32[k].path for k in graphs}, data, y, thresholds.single_view, subset)
        for k in graphs:
            fp32[k].macro_f1 = f1
    report(f"FP32: {len(graphs)} folds + ensemble, max |p_torch - p_onnx| = {worst:.2e} (limit {FP32_TOLERANCE:g})"
           + (f"; single-view out-of-fold macro-F1 on {f1['images']} images {f1['tuned']:.4f} tuned, {f1['at_0.5']:.4f} at 0.5"
              if y is not None else ""))

    calib = None
    variants = []
    if "fp16" in precisions:
        variants.append(("fp16", "any", lambda src, dst: to_fp16(src, dst), "fp16"))
    if "int8" in precisions:
        calib = data.images(data.sample_ids(calib_images, seed + 1)) if data.available else None
        if calib is None:
            raise ExportError("INT8 calibration needs the run's training images, which are not reachable")
        if "cpu" in int8_targets:
            variants.append(("int8", "cpu", lambda src, dst: to_int8(src, dst, calib, "cpu"), "int8-cpu"))
        if "tensorrt" in int8_targets:
            variants.append(("int8", "tensorrt", lambda src, dst: to_int8(src, dst, calib, "tensorrt"), "int8-trt"))

    for precision, target, convert, suffix in variants:
        files = {}
        for key, ref in fp32.items():
            stem = "ensemble" if key == "ensemble" else f"fold{key}"
            path = convert(ref.path, out / f"{stem}.{suffix}.onnx")
            module = ensemble if key == "ensemble" else graphs[key]
            files[key] = Exported(path, ref.kind, ref.fold, precision, target, parity(module, path, real, seed))
        line = f"{suffix.upper()}: max |p_torch - p| = {max(e.parity['max_abs_diff'] for e in files.values()):.2e}"
        line += f", mean {np.mean([e.parity['mean_abs_diff'] for e in files.values()]):.2e}"
        if y is not None:
            f1, _ = oof_f1({k: files[k].path for k in graphs}, data, y, thresholds.single_view, subset)
            for k in graphs:
                files[k].macro_f1 = f1
            line += (f"; out-of-fold macro-F1 {f1['tuned']:.4f} tuned ({f1['tuned'] - fp32[0].macro_f1['tuned']:+.4f}"
                     f" vs FP32), {f1['at_0.5']:.4f} at 0.5")
        report(line)
        exported += files.values()

    spec = write_model_spec(
        out / "model.json", thresholds=thresholds.tuned, preprocess=pp, folds=cfg.folds, tta=thresholds.tta,
        single_view_thresholds=thresholds.single_view,
        files=[e.entry() for e in exported],
        checkpoints=[{"fold": k, "path": str(p.resolve()), "sha256": sha256_of(p)} for k, p in enumerate(ckpt_paths)],
        versions=_versions(),
        extra={"run": str(run.path.resolve()), "arch": {"name": cfg.arch, "width": cfg.width, "attention": cfg.attention},
               "calibration_images": int(len(calib)) if calib is not None else 0},
    )
    report(f"wrote {len(exported)} ONNX files and {out / 'model.json'}")
    return spec

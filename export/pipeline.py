"""``python -m export onnx``: every fold and the ensemble in FP32, the asked-for reduced-precision
variants judged on the run's out-of-fold images, the checkpoints, then model.json.

Which variants ``--precision``/``--int8-targets`` ask for (``INT8_TARGETS``): ``cpu-vnni`` (8-bit
weights, for CPUs with VNNI or AMX), ``cpu-avx2`` (7-bit weights, safe on any x86 CPU), ``cpu``
(the one of the two for the CPU exporting: the usual case of exporting where you deploy, at half
the export time of both; name both for a fleet of mixed CPUs, and ``auto`` picks by each
machine's flags), ``tensorrt`` (the symmetric flavour TensorRT expects).
"""

import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from export.onnx_export import (FP32_TOLERANCE, PARITY_BATCHES, PRECISIONS, EnsembleGraph, Exported, ExportError,
                                FoldGraph, RunData, eval_subset, export_graph, load_models, parity)
from export.precision import RECIPES
from export.quality import (DEFAULT_MAX_F1_DROP, assess, distribution, fp32_quality, predict_oof, reference,
                            threshold_table)
from runtime.backends.select import default_choices
from runtime.model_spec import FP32, INPUT_NAME, LOGITS, PROBS, sha256_of, write_model_spec
from runtime.onnx_session import make_session
from runtime.probe import cpu_class, cpu_info
from runtime.writeutil import atomic_path
from train.image_input import ImageInput
from train.run import Run

log = logging.getLogger(__name__)

INT8_TARGETS = {"cpu": (f"int8-cpu-{cpu_class(cpu_info()[1])}",), "cpu-vnni": ("int8-cpu-vnni",),
                "cpu-avx2": ("int8-cpu-avx2",), "tensorrt": ("int8-trt",)}
ENSEMBLE_PARITY_IMAGES = 256


def requested_variants(precisions, int8_targets):
    """The reduced-precision variant names asked for, in RECIPES order."""
    for value, valid, what in ((precisions, PRECISIONS, "precision"), (int8_targets, INT8_TARGETS, "INT8 target")):
        bad = [v for v in value if v not in valid]
        if bad or not value:
            raise ValueError(f"unknown {what} {bad[0] if bad else ''!r}; valid: {', '.join(valid)}")
    names = {"fp16"} if "fp16" in precisions else set()
    if "int8" in precisions:
        names.update(n for t in int8_targets for n in INT8_TARGETS[t])
    return [n for n in RECIPES if n in names]


def export_run(run, out, precisions=("fp32",), calib_images=64, seed=0, report=print, eval_images=3000,
               int8_targets=("cpu", "tensorrt"), max_f1_drop=DEFAULT_MAX_F1_DROP):
    """Export a finished run; returns the ModelSpec written to OUT/model.json."""
    names = requested_variants(precisions, int8_targets)
    run, out = Run(run), Path(out)
    models = load_models(run)
    data = RunData(run)
    if names and not data.available:
        raise ExportError(f"{', '.join(names)}: calibrating and judging a reduced precision needs the run's "
                          f"images, which are not reachable ({run.config.dataset()[1]})")
    if not data.available:
        log.warning("the run's images are not reachable; FP32 parity uses random inputs only and F1 is not measured")
    out.mkdir(parents=True, exist_ok=True)
    pp = run.preprocess
    graphs = {**{k: ImageInput(FoldGraph(m), pp).eval() for k, m in enumerate(models)},
              "ensemble": ImageInput(EnsembleGraph(models), pp).eval()}
    fp32 = export_fp32(graphs, out, data, seed, report)
    ref = reference(run, eval_subset(len(data.ids), eval_images, seed)) if data.available else None
    variants = {FP32: fp32_variant(run, ref)}
    files = list(fp32.values())
    calib = data.images(data.calibration_ids(calib_images, seed)) if names else None
    for name in names:
        made, variants[name] = export_variant(name, fp32, out, data, calib, ref, max_f1_drop, report)
        files += made
    spec = write_spec(run, out, files, variants, len(calib) if calib is not None else 0)
    report(f"wrote {len(files)} ONNX files, {len(spec.checkpoints)} checkpoints and {spec.path}")
    return spec


def export_fp32(graphs, out, data, seed, report):
    """The FP32 files, each checked against PyTorch; {fold index or 'ensemble': Exported}."""
    size = data.pp.size
    real = (data.images(data.sample_ids(max(PARITY_BATCHES), seed)) if data.available
            else np.zeros((0, 4, size, size), np.uint8))
    files = {}
    for key, graph in graphs.items():
        fold = key != "ensemble"
        outputs = (LOGITS, PROBS) if fold else (PROBS,)
        path = export_graph(graph, out / f"{f'fold{key}' if fold else 'ensemble'}.onnx", size, outputs)
        files[key] = Exported(path, "fold" if fold else "ensemble", key if fold else -1, FP32, "fp32", "any", outputs,
                              {"parity_vs_torch": parity(graph, path, real, seed)})
    worst = max(e.checks["parity_vs_torch"]["max_abs_diff"] for e in files.values())
    if worst > FP32_TOLERANCE:
        lines = [f"{e.path.name}: max |p_torch - p_onnx| = {e.checks['parity_vs_torch']['max_abs_diff']:.2e}"
                 for e in files.values()]
        raise ExportError(f"FP32 parity above {FP32_TOLERANCE:g}: " + "; ".join(lines))
    report(f"FP32: {len(files) - 1} folds + ensemble, max |p_torch - p_onnx| = {worst:.2e} (limit {FP32_TOLERANCE:g})")
    return files


def fp32_variant(run, ref):
    thresholds = run.thresholds()
    return {"precision": "fp32", "target": "any", "usable": True,
            "reason": "the reference: the run's own precision; thresholds tuned by train on its out-of-fold predictions",
            "thresholds": threshold_table({1: thresholds.single_view, thresholds.tta: thresholds.tuned}, thresholds.tta),
            "quality": fp32_quality(ref, thresholds.tuned) if ref is not None else {}}


def export_variant(name, fp32, out, data, calib, ref, max_drop, report):
    """A reduced-precision variant's files, thresholds tuned on its own out-of-fold predictions,
    and the verdict on it: (list of Exported, model.json's variants entry)."""
    recipe = RECIPES[name]
    made = {}
    for key, src in fp32.items():
        path = recipe.convert(src.path, out / f"{src.path.stem}.{name}.onnx", calib)
        made[key] = Exported(path, src.kind, src.fold, name, recipe.precision, recipe.target, (PROBS,))
    probs = predict_oof({k: e.path for k, e in made.items() if k != "ensemble"}, data, ref)
    thresholds, quality, usable, reason = assess(ref, probs, max_drop)
    for k, e in made.items():
        if k == "ensemble":
            e.checks["abs_diff_vs_fp32"] = ensemble_diff(fp32[k].path, e.path, data, ref.ids[:ENSEMBLE_PARITY_IMAGES])
        else:
            rows = ref.folds == k
            e.checks["abs_diff_vs_fp32"] = distribution(probs[ref.tta][rows] - ref.probs[ref.tta][rows])
    d, f1 = quality["abs_diff_vs_fp32"], quality["macro_f1"]["tuned"]
    report(f"{name}: |p - p_fp32| p50 {d['p50']:.1e}, p99 {d['p99']:.1e}, max {d['max']:.1e} over "
           f"{quality['images']} out-of-fold images x {ref.tta} view(s); macro-F1 {f1:.4f} vs FP32 "
           f"{quality['fp32_macro_f1']['tuned']:.4f}: {'usable' if usable else 'UNUSABLE'} ({reason})")
    entry = {"precision": recipe.precision, "target": recipe.target, **({"cpu": recipe.cpu} if recipe.cpu else {}),
             "usable": usable, "reason": reason, "thresholds": threshold_table(thresholds, ref.tta),
             "quality": quality, "settings": recipe.settings()}
    return list(made.values()), entry


def ensemble_diff(fp32_path, path, data, ids):
    """|p - p_fp32| of an ensemble file on some of the evaluated images (single view)."""
    x = data.images(ids)
    ref, got = (make_session(p, "cpu").run([PROBS], {INPUT_NAME: x})[0] for p in (fp32_path, path))
    return distribution(got - ref)


def copy_checkpoints(run, out):
    """The run's checkpoints, copied into OUT/checkpoints (model.json lists only files inside its folder)."""
    entries = []
    for k, src in enumerate(run.checkpoints()):
        dst = out / "checkpoints" / f"fold{k}.pt"
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        entries.append({"fold": k, "path": dst.relative_to(out).as_posix(), "sha256": sha256_of(dst)})
    return entries


def _versions():
    try:
        import tensorrt

        trt = tensorrt.__version__
    except ImportError:
        trt = None
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "tensorrt": trt, "python": platform.python_version()}


def write_spec(run, out, files, variants, calibration_images):
    cfg = run.config
    return write_model_spec(
        out / "model.json", preprocess=run.preprocess, folds=cfg.folds, tta=cfg.tta, variants=variants,
        defaults=default_choices, files=[e.entry(out) for e in files], checkpoints=copy_checkpoints(run, out),
        versions=_versions(),
        source={"run": str(run.path.resolve()), "arch": {"name": cfg.arch, "width": cfg.width, "attention": cfg.attention},
                "pretrained": run.pretrained, "training_data": run.training_data,
                "calibration_images": calibration_images,
                "note": "provenance: the viewer reads training_data (synthetic: a warning); nothing else"})

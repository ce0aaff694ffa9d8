"""python -m runtime {infer,bench,merge,score,gpu-check}: batch inference, benchmark, scoring and the
GPU check (no torch needed)."""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from runtime.backends.base import available_backends
from runtime.cli import ArgumentParser, dispatch, non_negative_int, positive_int, positive_int_list, seconds, warn
from runtime.classes import NUM_CLASSES
from runtime.decoders import DECODER_HELP, DECODERS, resolve_decoder
from runtime.errors import DataError
from runtime.pipeline import DEFAULT_WORKERS


def _shard(text):
    from runtime.infer import parse_shard

    try:
        parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--shard ")) from None
    return text


BACKEND_OPTION_HELP = ("a backend option, repeatable: cuda_graph=1, prefer_nhwc=1, "
                       "conv_algo=exhaustive|heuristic|default, conv_workspace=max|default, io_binding=0 "
                       "(ONNX Runtime CUDA); max_batch=N, gpu=N, cuda_graph=1 "
                       "(onnxruntime-tensorrt-rtx); docs/gpu.md")


def parser():
    p = ArgumentParser(prog="python -m runtime", description="fast batch inference for HPA models")
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("infer", help="predict every complete sample in a folder; write Kaggle files")
    i.add_argument("--model", required=True, help="deployment folder with model.json")
    i.add_argument("--images", required=True, help="folder of {Id}_{red,green,blue,yellow}.png")
    i.add_argument("--ids", default="", help="CSV with an Id column (e.g. sample_submission.csv); default: every complete Id")
    i.add_argument("--out", required=True, help="folder for submission.csv, probabilities.csv, errors.csv, summary.json")
    i.add_argument("--backend", default="auto", choices=available_backends(),
                   help="auto picks the engine, file and precision for this machine and says why; docs/gpu.md")
    i.add_argument("--engine-cache", default="", help="onnxruntime-tensorrt: folder for the engines it builds; "
                                                      "onnxruntime-tensorrt-rtx: for its compiled kernels "
                                                      "(default: a folder per model file under ~/.cache/hpa-toolkit)")
    i.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE", help=BACKEND_OPTION_HELP)
    i.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8"], help="default: auto picks")
    i.add_argument("--model-file", default="ensemble",
                   help="ensemble, fold<k>, or the name of a file model.json lists (e.g. ensemble.fp16.onnx)")
    i.add_argument("--batch-size", type=positive_int, default=32, help="images per model call")
    i.add_argument("--threshold-mode", default="tuned", choices=["tuned", "0.5"],
                   help="tuned: model.json's per-class thresholds; 0.5: every class at 0.5")
    i.add_argument("--tta", type=int, default=None, choices=[1, 2, 4, 8],
                   help="test-time views averaged per image (flips/quarter turns); default: model.json's "
                        "(the count its thresholds were tuned for); 1 is fastest")
    i.add_argument("--workers", type=non_negative_int, default=DEFAULT_WORKERS,
                   help=f"decode threads (default: one per core, at least 4: {DEFAULT_WORKERS} here; "
                        "0: decode in the main thread)")
    i.add_argument("--resume", action="store_true",
                   help="skip Ids already done by an interrupted run (refused when its settings differ)")
    i.add_argument("--shard", type=_shard, default=None, help="i/n: process a deterministic 1/n of the Ids; "
                                                                      "runtime merge joins the shards (default: all Ids)")
    i.add_argument("--max-pixels", type=positive_int, default=None,
                   help="decoded-size limit per channel image, checked from its header before decoding "
                        "(default: HPA_MAX_PIXELS or 8192x8192); a larger image is that sample's error")
    i.add_argument("--decoder", default="auto", choices=DECODERS, help=DECODER_HELP)

    b = sub.add_parser("bench", help="throughput and latency per backend and batch size")
    b.add_argument("--model", required=True, help="deployment folder with model.json")
    b.add_argument("--backend", default="",
                   help="comma-separated backend[:precision][+key=value...] list (+key=value: a backend option "
                        "for that item only, e.g. onnxruntime-cuda:fp16+cuda_graph=1; default: onnxruntime:fp32, "
                        "onnxruntime:int8 "
                        "when the model has an INT8 file for this CPU, and torch where PyTorch is installed)")
    b.add_argument("--batch-sizes", type=positive_int_list, default=[1, 8, 32], help="comma-separated batch sizes to time")
    b.add_argument("--images", default="", help="PNG folder for the decode-only and end-to-end figures "
                                                "(default: the model alone)")
    b.add_argument("--seconds", type=seconds, default=3.0, help="time per measurement")
    b.add_argument("--workers", type=non_negative_int, default=DEFAULT_WORKERS, help="decode threads, as for infer")
    b.add_argument("--decoder", default="auto", choices=DECODERS, help=DECODER_HELP)
    b.add_argument("--json", default="", help="also write the results to this JSON file (default: print only)")
    b.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help=BACKEND_OPTION_HELP + " (each backend of the list gets the ones it takes)")

    m = sub.add_parser("merge", help="join the outputs of --shard runs into one submission")
    m.add_argument("shards", nargs="+", help="the --out folders of the shard runs")
    m.add_argument("--out", required=True, help="folder for the merged submission.csv, probabilities.csv, errors.csv")
    m.add_argument("--ids", default="", help="the --ids CSV the shards were given (its order is kept); "
                                             "give this or --images (no default)")
    m.add_argument("--images", default="", help="or the image folder (sorted Id order, as infer uses) when the "
                                                "shards were given no --ids (no default)")

    s = sub.add_parser("score", help="macro-F1 of a submission against a labels CSV")
    s.add_argument("--submission", required=True, help="a submission.csv (Id,Predicted)")
    s.add_argument("--labels", required=True, help="the true labels (Id,Target), e.g. test_labels.csv")

    g = sub.add_parser("gpu-check", help="prove the GPU path here: tiny fit, export, every GPU backend's parity, "
                                         "F1 and speed (seconds on a machine without a GPU: it says what it skipped)")
    g.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and the steps' files")
    g.add_argument("--seconds", type=seconds, default=1.0, help="time per throughput measurement")
    return p


def main(argv=None):
    from runtime.backends import BackendUnavailable

    return dispatch(parser(), COMMANDS, argv, (BackendUnavailable,))


def cmd_infer(args):
    from tqdm import tqdm

    from runtime.backends import make_backend
    from runtime.backends.base import backend_options
    from runtime.infer import run_inference, shard_ids
    from runtime.labels import read_ids
    from runtime.model_spec import load_model_spec
    from runtime.outlock import writer_lock
    from runtime.reader import ImageFolder
    from runtime.writeutil import writable_folder

    spec = load_model_spec(args.model)
    folder = ImageFolder(args.images, args.max_pixels, resolve_decoder(args.decoder, args.workers))
    ids, problems = (read_ids(args.ids), {}) if args.ids else folder.listing()
    if not ids and not problems:  # the data root given for its test/ folder: refused, outputs kept
        raise DataError(folder.root, "no samples here (no {Id}_{red,green,blue,yellow} image files); "
                                     "give the folder that holds them, or --ids")
    # the folder's Ids in sorted order, the incomplete ones among them (merge --images orders them alike)
    ids = shard_ids(sorted([*ids, *problems]) if problems else ids, args.shard)
    for sample_id in (i for i in ids if i in problems):  # tried like any other Id: errors.csv says why
        warn(f"{folder.root}: Id {sample_id!r}: {problems[sample_id]}; listed in errors.csv")
    thresholds = None if args.threshold_mode == "tuned" else [0.5] * NUM_CLASSES
    writable_folder(args.out)  # the inputs are good: now the output folder, before the model loads
    with writer_lock(args.out):  # a second writer of this folder is refused now, not after loading
        options = backend_options(args.backend_option, args.engine_cache)
        backend = make_backend(spec, args.backend, args.model_file, args.precision, **options)
        print(f"backend: {backend.description}: {backend.choice.reason}", file=sys.stderr)
        with backend:
            summary = run_inference(backend, folder, ids, args.out, args.batch_size, thresholds, args.resume,
                                    args.workers, progress=lambda **kw: tqdm(**kw), views=args.tta)
    out = Path(args.out)
    fresh = summary["images"] - summary["resumed_from"]
    speed = (f"{summary['images_per_s'] or 0:.1f} images/s with {summary['backend']}"
             + (f" x {summary['tta_views']} test-time views" if summary["tta_views"] > 1 else "")
             + f", decoder {summary['decoder']}") if fresh else "nothing left to do"
    print(f"{summary['done']} done, {summary['failed']} failed"
          + (f" ({summary['resumed_from']} from an earlier run)" if summary["resumed_from"] else "")
          + f", {speed}; wrote {out / 'submission.csv'}, {out / 'probabilities.csv'}, {out / 'errors.csv'}")
    if summary["failed"]:
        n = summary["failed"]
        warn(f"{out / 'errors.csv'}: {n} sample{'s' if n > 1 else ''} could not be read "
             f"({'their submission.csv rows are' if n > 1 else 'its submission.csv row is'} empty); this file says why")
    return 0


def cmd_bench(args):
    from runtime.backends.base import backend_options
    from runtime.bench import bench, format_table
    from runtime.probe import cpu_info

    name, flags = cpu_info()
    print(f"CPU: {name} ({' '.join(flags)}); {os.cpu_count()} cores")
    backends = args.backend or default_bench_backends(args.model)
    rows = bench(args.model, backends, args.batch_sizes, args.images or None,
                 args.seconds, args.workers, args.json or None, resolve_decoder(args.decoder, args.workers),
                 backend_options(args.backend_option))
    print(format_table(rows))
    return 0


def default_bench_backends(model):
    """ONNX Runtime FP32, its INT8 file for this CPU when the model has one, and the PyTorch
    reference where PyTorch and the train package are installed (not on a runtime-only install)."""
    from runtime.backends.select import choose
    from runtime.model_spec import load_model_spec

    names = ["onnxruntime:fp32"]
    try:
        choose(load_model_spec(model), "onnxruntime", "int8", "cpu")
        names.append("onnxruntime:int8")
    except DataError:  # no INT8 file for this CPU
        pass
    if importlib.util.find_spec("torch") and importlib.util.find_spec("train"):
        names.append("torch")
    return ",".join(names)


def cmd_merge(args):
    from runtime.infer import merge_shards
    from runtime.labels import read_ids
    from runtime.reader import ImageFolder

    if bool(args.ids) == bool(args.images):
        raise ValueError("give exactly one of --ids or --images (the Id order of the unsharded run)")
    if args.ids:
        ids = read_ids(args.ids)
    else:
        ids, problems = ImageFolder(args.images).listing()
        ids = sorted([*ids, *problems])  # as infer orders them
    summary = merge_shards(args.shards, args.out, ids)
    print(f"merged {summary['shards']} shards: {summary['done']} done, {summary['failed']} failed; "
          f"wrote {Path(args.out) / 'submission.csv'}")
    return 0


def cmd_score(args):
    from runtime.labels import multi_hot, read_labels
    from runtime.metrics import f1_per_class

    truth = read_labels(args.labels)
    pred = read_labels(args.submission, column="Predicted")
    missing = [i for i in truth if i not in pred]
    if missing:
        raise DataError(args.submission, f"{len(missing)} labelled Ids have no prediction (first: {missing[0]})")
    ids = list(truth)
    f1 = f1_per_class(multi_hot([truth[i] for i in ids]), multi_hot([pred[i] for i in ids]))
    print(f"macro-F1 {f1.mean():.4f} over {len(ids)} images")
    return 0


def cmd_gpu_check(args):
    from runtime.gpu_check import gpu_check

    return gpu_check(args.out, args.seconds)


COMMANDS = {"infer": cmd_infer, "bench": cmd_bench, "merge": cmd_merge, "score": cmd_score, "gpu-check": cmd_gpu_check}

if __name__ == "__main__":
    sys.exit(main())

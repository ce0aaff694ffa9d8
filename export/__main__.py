"""python -m export {onnx,tensorrt,triton,int8-ceiling,int8-levers}: the export command line."""

import sys
import time

from runtime.cli import (ArgumentParser, debug_requested, dispatch, finite_float, guarded, non_negative_int,
                         positive_float, positive_int, positive_int_list, seconds)


def parser():
    p = ArgumentParser(prog="python -m export", description="export a training run for deployment")
    sub = p.add_subparsers(dest="command", required=True)
    _deploy_commands(sub)
    _int8_study_commands(sub)
    return p


def _deploy_commands(sub):
    """onnx, tensorrt and triton: what a deployment is made of."""
    o = sub.add_parser("onnx", help="folds + ensemble to ONNX, verified against PyTorch, and model.json")
    o.add_argument("--run", required=True, help="a finished training run folder")
    o.add_argument("--out", required=True, help="deployment folder to write")
    o.add_argument("--precision", default="fp32", help="comma-separated: fp32, fp16, int8 (fp32 is always written)")
    o.add_argument("--calib-images", type=positive_int, default=64, help="training images used to calibrate INT8")
    o.add_argument("--int8-targets", default="cpu,tensorrt",
                   help="INT8 flavours to write: cpu-vnni (for CPUs with VNNI/AMX), cpu-avx2 (7-bit weights, for "
                        "the others), cpu (the one for this machine's CPU), tensorrt (symmetric, for TensorRT)")
    o.add_argument("--eval-images", type=positive_int, default=3000,
                   help="out-of-fold images each reduced precision is judged and tuned on")
    o.add_argument("--max-f1-drop", type=finite_float, default=0.01,
                   help="a reduced precision whose out-of-fold macro-F1 falls more than this below FP32's is "
                        "marked unusable (auto never picks it)")
    o.add_argument("--seed", type=int, default=0, help="random seed choosing the calibration and evaluation images")

    t = sub.add_parser("tensorrt", help="build a TensorRT engine from an exported ONNX file (GPU hosts)")
    t.add_argument("--onnx", required=True, help="an ONNX file of a deployment folder, e.g. DEPLOY/ensemble.fp16.onnx")
    t.add_argument("--out", required=True, help="engine file to write")
    t.add_argument("--min-batch", type=positive_int, default=1,
                   help="smallest batch of the profile (the runtime pads smaller ones; Triton needs 1)")
    t.add_argument("--opt-batch", type=positive_int, default=32, help="the batch the profile is tuned for")
    t.add_argument("--max-batch", type=positive_int, default=64, help="largest batch of the profile")
    t.add_argument("--workspace", type=positive_float, default=4.0, help="builder workspace in GB")
    t.add_argument("--timing-cache", default=None,
                   help="timing cache file, read when present and saved after the build (default: none)")

    r = sub.add_parser("triton", help="a Triton Inference Server model repository from a deployment folder")
    r.add_argument("--deploy", required=True, help="deployment folder with model.json")
    r.add_argument("--out", required=True, help="model repository folder")
    r.add_argument("--name", default="hpa", help="model name in the repository (the Triton model's folder)")
    r.add_argument("--backend", default="auto", choices=["auto", "onnx", "tensorrt"],
                   help="auto: the TensorRT engine when one is listed, else the ONNX ensemble")
    r.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="which listed file or engine the repository serves")
    r.add_argument("--max-batch", type=positive_int, default=64, help="capped by the engine's optimization profile")
    r.add_argument("--preferred", default="8,32", help="preferred dynamic-batching sizes")
    r.add_argument("--instances", type=positive_int, default=1, help="model instances per device")
    r.add_argument("--kind", default="auto", choices=["auto", "gpu", "cpu"],
                   help="instance kind; auto: GPU for a TensorRT plan (cpu is refused for one), else CPU")


def _int8_study_commands(sub):
    """int8-ceiling and int8-levers: what INT8 can gain on this CPU and which setting gains it."""

    c = sub.add_parser("int8-ceiling", help="INT8 vs FP32 speed of single convolutions on this CPU: the most "
                                            "the INT8 CPU flavour can gain here")
    c.add_argument("--batch-size", type=positive_int, default=32, help="images per timed call")
    c.add_argument("--seconds", type=seconds, default=2.0, help="timing per shape and precision")
    c.add_argument("--threads", type=non_negative_int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    c.add_argument("--json", default=None, help="also write the rows to this JSON file (default: print only)")

    v = sub.add_parser("int8-levers", help="speed and |dp| of each INT8 setting against an FP32 file, one lever at a time")
    v.add_argument("--run", required=True, help="the training run (calibration and held-out images)")
    v.add_argument("--onnx", required=True, help="the FP32 file, e.g. DEPLOY/ensemble.onnx")
    v.add_argument("--batch-sizes", type=positive_int_list, default=[1, 16], help="comma-separated batch sizes to time")
    v.add_argument("--seconds", type=seconds, default=3.0, help="timing per lever and batch size")
    v.add_argument("--calib-images", type=positive_int, default=64,
                   help="as export onnx: the same images (INT8 |dp| is measured on as many others)")
    v.add_argument("--only", default="", help="';'-separated lever names, as the table prints them (default: all)")
    v.add_argument("--json", default=None, help="also write the rows to this JSON file (default: print only)")


def main(argv=None):
    # export's own error types live beside code that imports onnx: on an install without it the
    # import itself must be one line too
    return guarded(_main, argv, debug=debug_requested(argv))


def _main(argv):
    from export.onnx_export import ExportError
    from export.tensorrt_build import TensorRTUnavailable

    return dispatch(parser(), COMMANDS, argv, (ExportError, TensorRTUnavailable))


def cmd_onnx(args):
    from export.pipeline import export_run
    from runtime.outlock import writer_lock

    t0 = time.perf_counter()
    precisions = tuple(dict.fromkeys(["fp32"] + [p.strip() for p in args.precision.split(",") if p.strip()]))
    targets = tuple(t.strip() for t in args.int8_targets.split(",") if t.strip())
    with writer_lock(args.out):  # one writer per deployment folder (runtime/outlock.py)
        export_run(args.run, args.out, precisions, args.calib_images, args.seed, eval_images=args.eval_images,
                   int8_targets=targets, max_f1_drop=args.max_f1_drop)
    print(f"exported in {time.perf_counter() - t0:.0f}s")
    return 0


def cmd_tensorrt(args):
    from export.tensorrt_build import build_engine
    from export.tensorrt_register import register_engine

    info = build_engine(args.onnx, args.out, args.min_batch, args.opt_batch, args.max_batch, args.workspace,
                        args.timing_cache)
    registered = register_engine(args.onnx, args.out, info)
    print(f"built {args.out} with TensorRT {info['tensorrt']} for compute capability "
          f"{info['compute_capability'] or 'unknown'} ({info['gpu'] or 'GPU not identified'}), batch "
          f"{args.min_batch}..{args.max_batch} optimised for {args.opt_batch}, TF32 off"
          + (f"; listed in {registered}" if registered else ""))
    return 0


def cmd_triton(args):
    from export.triton import write_repository

    folder, note = write_repository(args.deploy, args.out, args.name, args.backend, args.precision, args.max_batch,
                                    tuple(int(b) for b in args.preferred.split(",")), args.instances, args.kind)
    print(f"wrote Triton model {folder} (config.pbtxt checked against model.json)")
    if note:
        print(note)
    return 0


def _print_cpu():
    from runtime.probe import cpu_class, cpu_info

    name, flags = cpu_info()
    print(f"CPU: {name}; SIMD: {' '.join(flags) or 'unknown'}"
          f"{'' if cpu_class(flags) == 'vnni' else ' (no VNNI: INT8 uses the slower AVX2 u8*s8 path)'}")
    return name, flags


def cmd_int8_ceiling(args):
    from export.int8_ceiling import ceiling, format_rows
    from runtime.writeutil import atomic_write_json

    name, flags = _print_cpu()
    rows = ceiling(batch_size=args.batch_size, seconds=args.seconds, threads=args.threads)
    print(format_rows(rows))
    print(f"best INT8/FP32 over these shapes: {max(r['ratio'] for r in rows):.2f}x")
    if args.json:
        atomic_write_json(args.json, {"cpu": name, "cpu_flags": flags, "rows": rows})
    return 0


def cmd_int8_levers(args):
    from export.int8_levers import HEADER, chosen, format_rows, levers, read_fp32, run_images
    from export.onnx_export import RunData
    from runtime.writeutil import atomic_write_json
    from train.run import Run

    only = chosen([o for o in args.only.split(";") if o])
    read_fp32(args.onnx)
    data = RunData(Run(args.run))
    calib, held = run_images(data, args.calib_images, args.run)
    name, flags = _print_cpu()
    print(HEADER)
    rows = levers(args.onnx, calib, held, args.batch_sizes, args.seconds, only,
                  report=lambda r: print(format_rows(r), flush=True))
    if args.json:
        atomic_write_json(args.json, {"cpu": name, "cpu_flags": flags, "onnx": args.onnx, "rows": rows})
    return 0


COMMANDS = {"onnx": cmd_onnx, "tensorrt": cmd_tensorrt, "triton": cmd_triton, "int8-ceiling": cmd_int8_ceiling,
            "int8-levers": cmd_int8_levers}

if __name__ == "__main__":
    sys.exit(main())

"""The hostile-user corpus: bad images, CSVs, model folders and command-line arguments,
built from generated fixtures. For each one: the exit status, a single ``error:`` line naming the
file (or the option), no traceback, and every good result equal to a clean run's (for a refused
command: the previous outputs untouched). docs/reliability.md states the count and the promise."""

import contextlib
import io
import json
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.__main__ import main as runtime_main
from runtime.model_spec import sha256_of
from runtime.reader import ImageFolder

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("red", "green", "blue", "yellow")
OUTPUTS = ("submission.csv", "probabilities.csv", "errors.csv")



# ---------------------------------------------------------------- bytes of bad images

def png(width, height, depth=8, idat=None, crc_ok=True):
    """A PNG whose header says width x height (one row of pixel data unless ``idat`` is given)."""
    def chunk(kind, data, ok=True):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) ^ (not ok))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0), crc_ok)
    data = zlib.compress(b"\0" * (width + 1)) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def encoded(ext, img):
    return cv2.imencode(ext, img)[1].tobytes()


def jpeg_claiming(width, height, good):
    """A valid JPEG whose SOF0 marker is patched to claim width x height."""
    data = bytearray(encoded(".jpg", good))
    at = data.index(b"\xff\xc0") + 5
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def _img(rng):
    return rng.integers(0, 255, (64, 64), dtype=np.uint8)


RNG = np.random.default_rng(7)
GOOD = _img(RNG)
# Id: (channel, bytes given the channel's good PNG bytes, what errors.csv's reason says)
BAD_BYTES = {
    "png-half": ("red", lambda b: b[:len(b) // 2], "truncated image"),
    "png-10-bytes": ("green", lambda b: b[:10], "truncated image header"),
    "png-30-bytes": ("blue", lambda b: b[:30], "truncated image"),
    "png-signature-only": ("yellow", lambda b: b[:8], "truncated image header"),
    "png-garbage-tail": ("red", lambda b: b[:40] + bytes(100), "truncated image"),
    "empty": ("green", lambda b: b"", "empty file"),
    "text": ("blue", lambda b: b"hello, I am text", "not a PNG, JPEG or TIFF"),
    "random-bytes": ("yellow", lambda b: RNG.bytes(500), "not a PNG, JPEG or TIFF"),
    "zero-bytes": ("red", lambda b: bytes(100), "not a PNG, JPEG or TIFF"),
    "gif": ("green", lambda b: b"GIF89a" + bytes(30), "not a PNG, JPEG or TIFF"),
    "bmp": ("blue", lambda b: encoded(".bmp", GOOD), "not a PNG, JPEG or TIFF"),
    "bomb-60000": ("red", lambda b: png(60000, 60000), "60000x60000 pixels is over the decoded-size limit"),
    "bomb-10000": ("green", lambda b: png(10000, 10000), "10000x10000 pixels is over the decoded-size limit"),
    "bomb-9000x8000": ("yellow", lambda b: png(9000, 8000), "over the decoded-size limit"),
    "bomb-jpeg": ("blue", lambda b: jpeg_claiming(60000, 60000, GOOD), "over the decoded-size limit"),
    "png-zero-width": ("red", lambda b: png(0, 10), "truncated image"),
    "png-bad-crc": ("green", lambda b: png(16, 16, crc_ok=False), "truncated image"),
    "png-bad-idat": ("blue", lambda b: png(16, 16, idat=b"not zlib" * 4), "truncated image"),
    "png-short-idat": ("yellow", lambda b: png(64, 64), "truncated image"),
    "png-depth-3": ("red", lambda b: png(16, 16, depth=3), "truncated image"),
    "jpeg-half": ("green", lambda b: encoded(".jpg", GOOD)[:300], "truncated image"),
    "jpeg-soi-only": ("blue", lambda b: b"\xff\xd8\xff\xe0", "image header"),
    "jpeg-garbage": ("yellow", lambda b: b"\xff\xd8\xff" + bytes(50), "image header"),
    "tiff-half": ("red", lambda b: encoded(".tif", GOOD)[:200], "image header"),
    "tiff-header-only": ("green", lambda b: encoded(".tif", GOOD)[:8], "image header"),
    "tiff-bad-ifd": ("blue", lambda b: b"II*\x00\xff\xff\xff\x7f" + bytes(64), "image header"),
    "tiff-float": ("yellow", lambda b: encoded(".tif", RNG.random((8, 8), dtype=np.float32)), "unsupported pixel type"),
}
MISSING = {f"missing-{ch}": ch for ch in CHANNELS}
UNSAFE = ["é1", "a b", "-lead", ".hidden", "cm,x", "x\n", "x\r", "tab\tx", 'q"uote', "semi;c", "x..y", "(paren)"]
LINKS = ("link-outside-png", "link-etc-hostname", "link-dangling", "link-loop", "channel-is-a-folder")


def clone(folder, src, new):
    for ch in CHANNELS:
        shutil.copy(folder / f"{src}_{ch}.png", folder / f"{new}_{ch}.png")


def add_bad_samples(folder, outside):
    """Every bad sample of the corpus, next to the good ones: {Id: (file named, reason)}."""
    src = ImageFolder(folder).ids()[0]
    expect = {}
    for sample_id, (ch, make, reason) in BAD_BYTES.items():
        clone(folder, src, sample_id)
        path = folder / f"{sample_id}_{ch}.png"
        path.write_bytes(make(path.read_bytes()))
        expect[sample_id] = (path.name, reason)
    for sample_id, ch in MISSING.items():
        clone(folder, src, sample_id)
        (folder / f"{sample_id}_{ch}.png").unlink()
        expect[sample_id] = (f"{sample_id}_{ch}.png", "missing file")
    for sample_id in UNSAFE:
        clone(folder, src, sample_id)
        expect[sample_id] = (str(folder), "unsafe")
    shutil.copy(folder / f"{src}_red.png", outside / "elsewhere.png")
    targets = {"link-outside-png": outside / "elsewhere.png", "link-etc-hostname": Path("/etc/hostname"),
               "link-dangling": folder / "nowhere.png", "link-loop": folder / "link-loop_red.png"}
    reasons = {"link-outside-png": "outside the image folder", "link-etc-hostname": "outside the image folder",
               "link-dangling": "missing file", "link-loop": "cannot read", "channel-is-a-folder": "cannot read"}
    for sample_id in LINKS:
        clone(folder, src, sample_id)
        path = folder / f"{sample_id}_red.png"
        path.unlink()
        if sample_id == "channel-is-a-folder":
            path.mkdir()
        else:
            path.symlink_to(targets[sample_id])
        expect[sample_id] = (path.name, reasons[sample_id])
    return expect


def run_quietly(fn, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = fn(argv)
    return code, err.getvalue()


def read_rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1:]


@pytest.fixture(scope="module")
def corpus(tiny_data, tiny_deploy, tmp_path_factory):
    """The test set with every bad sample added, run once; and the clean run of the good ones."""
    root = tmp_path_factory.mktemp("fuzz")
    folder, outside = root / "images", root / "outside"
    shutil.copytree(tiny_data / "test", folder)
    outside.mkdir()
    good = ImageFolder(folder).ids()
    expect = add_bad_samples(folder, outside)
    base = ["infer", "--model", str(tiny_deploy[0]), "--tta", "1", "--batch-size", "4", "--precision", "fp32"]
    clean = run_quietly(runtime_main, [*base, "--images", str(tiny_data / "test"), "--out", str(root / "clean")])
    mixed = run_quietly(runtime_main, [*base, "--images", str(folder), "--out", str(root / "mixed")])
    return {"root": root, "good": good, "expect": expect, "clean": clean, "mixed": mixed}


# ---------------------------------------------------------------- images: one errors.csv row each

@pytest.mark.parametrize("sample_id", [*BAD_BYTES, *MISSING, *UNSAFE, *LINKS], ids=ascii)
def test_bad_image_is_its_own_one_line_row(corpus, sample_id):
    code, err = corpus["mixed"]
    assert code == 0 and "Traceback" not in err
    rows = {r[0]: r for r in read_rows(corpus["root"] / "mixed" / "errors.csv")}
    file, reason = corpus["expect"][sample_id]
    assert sample_id in rows, f"{sample_id!r} vanished"
    _, path, got = rows[sample_id]
    assert path.endswith(file) and reason in got and "\n" not in got
    if sample_id in UNSAFE:  # found by the folder scan: also said on stderr, on one line
        assert sum(f"Id {sample_id!r}:" in line for line in err.splitlines()) == 1


def test_good_samples_equal_the_clean_run(corpus):
    assert corpus["clean"][0] == 0
    for name in ("submission.csv", "probabilities.csv"):
        clean = read_rows(corpus["root"] / "clean" / name)
        mixed = {r[0]: r for r in read_rows(corpus["root"] / "mixed" / name)}
        assert [mixed[r[0]] for r in clean] == clean and len(clean) == len(corpus["good"])
    assert len(read_rows(corpus["root"] / "mixed" / "errors.csv")) == len(corpus["expect"])


def test_the_same_bad_images_are_left_out_of_training_with_their_reason(corpus, tiny_data, tmp_path):
    from runtime.preprocess import Preprocess
    from train.data import Samples

    bad = [i for i in corpus["expect"] if i not in UNSAFE]  # unsafe Ids cannot be in a labels CSV
    labels = tmp_path / "train.csv"
    labels.write_text("Id,Target\n" + "".join(f"{i},0\n" for i in [*corpus["good"], *bad]))
    samples = Samples(labels, corpus["root"] / "images", Preprocess(size=32), threads=2, progress=False)
    assert samples.ids == corpus["good"]
    assert {e[0]: corpus["expect"][e[0]][1] in e[2] for e in samples.errors} == {i: True for i in bad}


# ---------------------------------------------------------------- refused commands: one line, nothing lost

@pytest.fixture(scope="module")
def base(tiny_data, tiny_deploy, tmp_path_factory):
    """A clean run's outputs (a refused command must leave them as they were) and three shards."""
    root = tmp_path_factory.mktemp("refusals")
    ids = str(tiny_data / "sample_submission.csv")
    infer = ["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"), "--tta", "1", "--ids", ids]
    for out, extra in (("clean", []), ("s0", ["--shard", "0/2"]), ("s1", ["--shard", "1/2"]),
                       ("s1-tta2", ["--shard", "1/2", "--tta", "2"])):
        assert run_quietly(runtime_main, [*infer, "--out", str(root / out), *extra])[0] == 0
    return {"root": root, "infer": infer, "ids": ids, "data": tiny_data, "deploy": tiny_deploy[0]}


class Case:
    """A refused command: ``build(ctx)`` -> (program, argv, text the error line must contain)."""

    def __init__(self, name, build, marks=()):
        self.param = pytest.param(build, id=name, marks=marks)


class Ctx:
    """One refusal's surroundings: a copy of the clean run's outputs in ``out`` and of the shards."""

    def __init__(self, base, tmp, run):
        self.tmp, self.data, self.ids, self.deploy, self.run = tmp, base["data"], base["ids"], base["deploy"], run
        self.out, self.shards = tmp / "out", base["root"]
        shutil.copytree(base["root"] / "clean", self.out)

    def shard(self, name):
        if (self.shards / name).is_dir() and not (self.tmp / name).exists():
            shutil.copytree(self.shards / name, self.tmp / name)
        return self.tmp / name

    def file(self, name, content):
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return str(path)

    def infer(self, *extra, model=None, ids=None):
        return ["infer", "--model", str(model or self.deploy), "--images", str(self.data / "test"), "--tta", "1",
                "--ids", ids or self.ids, "--out", str(self.out), *extra]


def infer_arg(*extra, names=None):
    return lambda c: ("runtime", c.infer(*extra), names or extra[0])


def infer_ids(content, names="ids.csv"):
    def build(c):
        return "runtime", c.infer(ids=c.file("ids.csv", content) if content is not None else str(c.tmp / "i.csv")), names

    return build


def infer_resume(*extra, prepare=None, names="settings.json"):
    def build(c):
        if prepare:
            prepare(c.out / ".chunks")
        return "runtime", c.infer("--resume", *extra), names

    return build


IDS_CASES = [
    Case("ids-missing", infer_ids(None, "i.csv: missing file")),
    Case("ids-is-a-folder", lambda c: ("runtime", c.infer(ids=str(c.tmp)), "is a folder")),
    Case("ids-empty-file", infer_ids("")),
    Case("ids-header-only", infer_ids("Id,Predicted\n", "no rows")),
    Case("ids-no-id-column", infer_ids("Image,Predicted\na,0\n", "expected columns Id")),
    Case("ids-binary", infer_ids(bytes(range(256)) * 4, "not a UTF-8")),
    Case("ids-latin-1", infer_ids("Id\ncaf\xe9\n".encode("latin-1"), "not a UTF-8")),
    Case("ids-field-over-csv-limit", infer_ids("Id\n" + "a" * 140_000 + "\n", "not a valid CSV row")),
    Case("ids-nul-in-id", infer_ids("Id\na\x00b\n", "line 2: unsafe")),
    Case("ids-duplicate", infer_ids("Id\na\nb\na\n", "line 4: duplicate Id a")),
    Case("ids-path-traversal", infer_ids("Id\n../etc/passwd\n", "unsafe")),
    Case("ids-newline-in-id", infer_ids('Id\n"x\ny"\n', "unsafe")),
    Case("ids-space-in-id", infer_ids("Id\na b\n", "unsafe")),
    Case("ids-comma-in-id", infer_ids('Id\n"cm,x"\n', "unsafe")),
    Case("ids-empty-id", infer_ids("Id\n\n,\n", "unsafe or empty")),
]

ARG_CASES = [Case(f"arg{' '.join(a)}".replace(" ", "_"), infer_arg(*a)) for a in [
    ("--batch-size", "0"), ("--batch-size", "-3"), ("--batch-size", "x"), ("--batch-size", "1.5"),
    ("--workers", "-1"), ("--tta", "3"), ("--tta", "0"), ("--shard", "5/2"), ("--shard", "1/0"),
    ("--shard", "a/b"), ("--shard", "2"), ("--shard", "-1/2"), ("--precision", "int4"), ("--backend", "foo"),
    ("--model-file", "bogus"), ("--threshold-mode", "0.3"), ("--max-pixels", "0"), ("--bogus",),
]] + [
    Case("arg--model-file_fold9", infer_arg("--model-file", "fold9", names="fold9")),
    Case("arg--backend_tensorrt-without-engine", infer_arg("--backend", "tensorrt", names="model.json")),
    Case("arg-missing--model", lambda c: ("runtime", ["infer", "--images", "x", "--out", "y"], "--model")),
    Case("images-missing", lambda c: ("runtime", c.infer("--images", str(c.tmp / "none")), "none: image folder")),
    Case("images-is-a-file", lambda c: ("runtime", c.infer("--images", c.file("f", "x")), "f: image folder not found")),
    Case("out-is-a-file", lambda c: ("runtime", c.infer("--out", c.file("o", "x")), "Not a directory")),
    Case("out-below-a-file", lambda c: ("runtime", c.infer("--out", c.file("o", "x") + "/sub"), "Not a directory")),
    Case("resume-other-precision", infer_resume("--precision", "fp16")),  # auto never takes fp16 on a CPU
    Case("resume-other-views", infer_resume("--tta", "2")),
    Case("resume-other-thresholds", infer_resume("--threshold-mode", "0.5")),
    Case("resume-other-batch-size", infer_resume("--batch-size", "3")),
    Case("resume-other-model-file", infer_resume("--model-file", "fold0")),
    Case("resume-other-backend", infer_resume("--backend", "torch")),
    Case("resume-damaged-chunk", infer_resume(prepare=lambda d: (d / "chunk-000000.csv").write_text("x,ok,1\n"),
                                              names="chunk-000000.csv: damaged")),
    Case("resume-no-settings", infer_resume(prepare=lambda d: (d / "settings.json").unlink(),
                                            names="settings.json: missing")),
    Case("resume-damaged-settings", infer_resume(prepare=lambda d: (d / "settings.json").write_text("{"),
                                                 names="settings.json: damaged")),
]


def merge(*shards, ids=True, extra=(), names="", prepare=None):
    def build(c):
        folders = [str(c.shard(s)) for s in shards]
        if prepare:
            prepare(c)
        return "runtime", ["merge", *folders, "--out", str(c.out),
                           *(["--ids", c.ids] if ids else []), *extra], names

    return build


MERGE_CASES = [
    Case("merge-neither-ids-nor-images", merge("s0", "s1", ids=False, names="exactly one of --ids or --images")),
    Case("merge-both-ids-and-images", merge("s0", "s1", extra=("--images", "x"), names="exactly one of")),
    Case("merge-shard-folder-missing", merge("s0", "gone", names="gone/summary.json: missing")),
    Case("merge-summary-missing", merge("s0", "s1", names="s1/summary.json: missing",
                                        prepare=lambda c: (c.tmp / "s1" / "summary.json").unlink())),
    Case("merge-summary-damaged", merge("s0", "s1", names="s1/summary.json: not the summary",
                                        prepare=lambda c: (c.tmp / "s1" / "summary.json").write_text("[1]"))),
    Case("merge-other-settings", merge("s0", "s1-tta2", names="s1-tta2/summary.json: made with other settings")),
    Case("merge-empty-shard-file", merge("s0", "s1", names="s1/errors.csv: empty file",
                                         prepare=lambda c: (c.tmp / "s1" / "errors.csv").write_bytes(b""))),
    Case("merge-foreign-header", merge("s0", "s1", names="probabilities.csv: not a probabilities.csv",
                                       prepare=lambda c: (c.tmp / "s1" / "probabilities.csv").write_text("Id,p\n"))),
    Case("merge-same-shard-twice", merge("s0", "s0", names="in more than one shard")),
    Case("merge-a-shard-missing", merge("s0", names="are in no shard")),
    Case("merge-id-not-asked-for", merge("s0", "s1", names="is not among the Ids", prepare=lambda c: (
        c.tmp / "s1" / "errors.csv").write_text("Id,file,reason\nstranger,x,y\n"))),
]


def score(sub, labels=None, names=None):
    def build(c):
        s = c.file("sub.csv", sub) if sub is not None else str(c.tmp / "none.csv")
        lab = c.file("labels.csv", labels) if labels is not None else str(c.data / "test_labels.csv")
        return "runtime", ["score", "--submission", s, "--labels", lab], names

    return build


SCORE_CASES = [
    Case("score-submission-missing", score(None, names="none.csv: missing file")),
    Case("score-submission-lacks-ids", score("Id,Predicted\na1,0\n", names="labelled Ids have no prediction")),
    Case("score-submission-bad-class", score("Id,Predicted\na1,99\n", names="sub.csv line 2: label 99")),
    Case("score-submission-no-predicted", score("Id,Target\na1,0\n", names="expected columns Id, Predicted")),
    Case("score-labels-bad-header", score("Id,Predicted\na1,0\n", "Image,Label\n", names="labels.csv: expected")),
]


def folds(content, *extra, names="labels.csv"):
    def build(c):
        path = c.file("labels.csv", content) if content is not None else str(c.tmp / "labels.csv")
        return "train", ["folds", "--labels", path, "--out", str(c.tmp / "folds.csv"), *extra], names

    return build


FOLDS_CASES = [
    Case("folds-labels-missing", folds(None, names="labels.csv: missing file")),
    Case("folds-labels-is-a-folder", lambda c: ("train", ["folds", "--labels", str(c.tmp), "--out", "f.csv"],
                                                "is a folder")),
    Case("folds-label-28", folds("Id,Target\na,28\n", names="line 2: label 28 outside")),
    Case("folds-label-negative", folds("Id,Target\na,-1\n", names="label -1 outside")),
    Case("folds-label-not-a-number", folds("Id,Target\na,x\n", names="label 'x' is not a number")),
    Case("folds-duplicate-id", folds("Id,Target\na,1\na,2\n", names="duplicate Id a")),
    Case("folds-no-target-column", folds("Id,Label\na,1\n", names="expected columns Id, Target")),
    Case("folds-empty-file", folds("", names="expected columns")),
    Case("folds-header-only", folds("Id,Target\n", names="no rows")),
    Case("folds-field-over-csv-limit", folds("Id,Target\na," + "1 " * 70_000 + "\n", names="not a valid CSV row")),
    Case("folds-unsafe-id", folds("Id,Target\n../a,1\n", names="unsafe")),
    Case("folds-fewer-ids-than-folds", folds("Id,Target\na,1\nb,2\n", "--folds", "3", names="cannot make 3 folds")),
    Case("folds--folds_1", folds("Id,Target\na,1\n", "--folds", "1", names="--folds")),
    Case("folds--folds_x", folds("Id,Target\na,1\n", "--folds", "x", names="--folds")),
]

def existing_run(c):
    (c.tmp / "run").mkdir()
    shutil.copy(Path(c.run) / "config.json", c.tmp / "run" / "config.json")
    return fit(names="run: run folder already exists")(c)


def folds_file(row, names):
    """--folds-file listing every training Id, with ``row(n, Id)`` as its line."""
    return lambda c: fit("--folds-file", "f.csv", names=names, files={"f.csv": "Id,fold\n" + "".join(
        row(n, i) for n, i in enumerate(ImageFolder(c.data / "train").ids()))})(c)


FIT = ["--folds", "2", "--width", "8", "--size", "32", "--epochs", "1", "--batch-size", "8", "--threads", "1"]


def fit(*extra, names=None, files=None):
    def build(c):
        made = {k: c.file(k, v) for k, v in (files or {}).items()}
        args = [made.get(a, a).replace("TMP", str(c.tmp)) for a in extra]
        return "train", ["fit", "--data", str(c.data), "--out", str(c.tmp / "run"), *FIT, *args], names or extra[0]

    return build


def torch_file():
    """A torch state dict, but not a ResNet's."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(1)}, buf)
    return buf.getvalue()


FIT_CASES = [
    Case("fit--folds-file-missing", fit("--folds-file", "TMP/none.csv", names="none.csv: --folds-file: file not found")),
    Case("fit--folds-file-is-a-folder", fit("--folds-file", "TMP", names="--folds-file: is a folder")),
    Case("fit--folds-file-no-fold-column", fit("--folds-file", "f.csv", files={"f.csv": "Id,x\na,1\n"},
                                               names="f.csv: expected columns Id, fold")),
    Case("fit--folds-file-fold-not-a-number", folds_file(lambda n, i: f"{i},x\n", "is not a whole number")),
    Case("fit--folds-file-lacks-ids", fit("--folds-file", "f.csv", files={"f.csv": "Id,fold\na,0\n"},
                                          names="Ids have no fold")),
    Case("fit--folds-file-fold-out-of-range", folds_file(lambda n, i: f"{i},{n % 3}\n", "folds must be 0..1")),
    Case("fit--pretrained-missing", fit("--pretrained", "TMP/none.pt", names="none.pt: --pretrained: file not found")),
    Case("fit--pretrained-is-a-folder", fit("--pretrained", "TMP", names="--pretrained: is a folder")),
    Case("fit--pretrained-text", fit("--pretrained", "w.pt", files={"w.pt": "hello"}, names="w.pt: not a readable")),
    Case("fit--pretrained-garbage", fit("--pretrained", "w.pt", files={"w.pt": bytes(range(256)) * 8},
                                        names="w.pt: not a readable")),
    Case("fit--pretrained-a-pickle", fit("--pretrained", "w.pt", files={"w.pt": pickle.dumps({"conv1.weight": object})},
                                         names="w.pt: not a readable")),
    Case("fit--pretrained-not-a-resnet", lambda c: fit("--pretrained", "w.pt", names="w.pt: not a torchvision ResNet",
                                                       files={"w.pt": torch_file()})(c)),
    Case("fit--data-missing", lambda c: ("train", ["fit", "--data", str(c.tmp / "none"), "--out", str(c.tmp / "r"), *FIT],
                                         "none: image folder not found")),
    Case("fit--images-missing", fit("--images", "TMP/none", names="none: image folder not found")),
    Case("fit-run-folder-exists", existing_run),
] + [Case(f"fit{a}_{v}", fit(a, v)) for a, v in [
    ("--epochs", "0"), ("--batch-size", "0"), ("--lr", "0"), ("--lr", "nan"), ("--folds", "1"), ("--workers", "-1"),
    ("--size", "-5"), ("--jobs", "0"), ("--cache-gb", "-1"), ("--fold", "5"), ("--fold", "x"), ("--tta", "3"),
]]

EXPORT_CASES = [
    Case("export-run-missing", lambda c: ("export", ["onnx", "--run", str(c.tmp / "none"), "--out", str(c.tmp / "d")],
                                          "none: run folder not found")),
    Case("export-run-not-a-run", lambda c: ("export", ["onnx", "--run", str(c.tmp), "--out", str(c.tmp / "d")],
                                            f"{c.tmp}: not a training run folder")),
    Case("export-run-is-a-file", lambda c: ("export", ["onnx", "--run", c.file("run.txt", "x"), "--out",
                                                       str(c.tmp / "d")], "run.txt: not a folder")),
    Case("export-triton-deploy-missing", lambda c: ("export", ["triton", "--deploy", str(c.tmp / "none"), "--out",
                                                               str(c.tmp / "t")], "none: model.json not found")),
] + [Case(f"export-levers-{name}", lambda c, extra=extra, names=names: (
    "export", ["int8-levers", "--run", str(c.run), "--seconds", "0.01", *extra(c)], names)) for name, extra, names in [
    ("onnx-missing", lambda c: ["--onnx", str(c.tmp / "none.onnx")], "none.onnx: ONNX file not found"),
    ("onnx-is-text", lambda c: ["--onnx", c.file("notes.onnx", "not a model")], "notes.onnx: not an ONNX model"),
    ("onnx-truncated", lambda c: ["--onnx", c.file("cut.onnx", (c.deploy / "fold0.onnx").read_bytes()[:5000])],
     "cut.onnx: not an ONNX model"),
    ("onnx-int8", lambda c: ["--onnx", str(c.deploy / "fold0.int8-cpu-vnni.onnx")], "a reduced-precision file"),
    ("onnx-fp16", lambda c: ["--onnx", str(c.deploy / "fold0.fp16.onnx")], "a reduced-precision file"),
    ("batch-0", lambda c: ["--onnx", str(c.deploy / "fold0.onnx"), "--batch-sizes", "1,0"], "--batch-sizes"),
    ("batch-word", lambda c: ["--onnx", str(c.deploy / "fold0.onnx"), "--batch-sizes", "abc"], "--batch-sizes"),
    ("lever-unknown", lambda c: ["--onnx", str(c.deploy / "fold0.onnx"), "--only", "cpu vnni"],
     "unknown lever 'cpu vnni'; valid: cpu-vnni as exported"),
    ("calib-all", lambda c: ["--onnx", str(c.deploy / "fold0.onnx"), "--calib-images", "100000"],
     "--calib-images 100000: the run has"),
]] + [Case("runtime-bench-batch-0", lambda c: ("runtime", ["bench", "--model", str(c.deploy), "--batch-sizes", "0"],
                                             "--batch-sizes"))]


def model(edit=None, names="model.json", marks=()):
    """Infer with a copy of the deployment folder that ``edit(folder, data)`` spoils."""
    def build(c):
        folder = c.tmp / "deploy"
        shutil.copytree(c.deploy, folder)
        data = json.loads((folder / "model.json").read_text())
        result = edit(folder, data)
        if result is not False:
            (folder / "model.json").write_text(json.dumps(data if result is None else result))
        return "runtime", c.infer("--precision", "fp32", model=folder), names

    return build


def raw(content):
    def edit(folder, data):
        (folder / "model.json").write_bytes(content)
        return False

    return edit


def THRESHOLDS(data):
    """The FP32 single-view thresholds list of a model.json."""
    return data["variants"]["fp32"]["thresholds"]["1"]["values"]


def set_key(path, value):
    def edit(folder, data):
        *parents, last = path
        target = data
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


def spoil_file(transform, update_sha=True):
    """Spoil ensemble.onnx (the file --precision fp32 picks); keep model.json's sha256 in step or not."""
    def edit(folder, data):
        path = folder / "ensemble.onnx"
        path.write_bytes(transform(path.read_bytes()))
        if update_sha:
            next(f for f in data["files"] if f["path"] == "ensemble.onnx")["sha256"] = sha256_of(path)

    return edit


def outside(where):
    """ensemble.onnx's files[].path leading out of the folder, to a copy with the right sha256
    (or to /etc/hostname)."""
    def edit(folder, data):
        entry = next(f for f in data["files"] if f["path"] == "ensemble.onnx")
        if where == "etc":
            entry["path"] = "../" * 12 + "etc/hostname"
            return
        target = folder.parent / where / "ensemble.onnx"
        target.parent.mkdir()
        shutil.copy(folder / "ensemble.onnx", target)
        entry["path"] = str(target) if where == "absolute" else f"../{where}/ensemble.onnx"

    return edit


MODEL_CASES = [
    Case("model-json-missing", model(lambda f, d: (f / "model.json").unlink() or False, "model.json not found")),
    Case("model-json-is-a-folder", model(lambda f, d: (f / "model.json").unlink() or (f / "model.json").mkdir()
                                         or False, "model.json not found")),
    Case("model-json-empty", model(raw(b""), "not valid JSON")),
    Case("model-json-not-json", model(raw(b"{format: hpa"), "not valid JSON")),
    Case("model-json-latin-1", model(raw('{"x": "caf\xe9"}'.encode("latin-1")), "not valid JSON")),
    Case("model-json-empty-object", model(lambda f, d: {}, "not a model.json of this toolkit")),
    Case("model-json-other-format", model(set_key(["format"], "onnx"), "not a model.json of this toolkit")),
    Case("model-json-version-1", model(set_key(["version"], 1), "re-export it")),
    Case("model-json-27-class-names", model(lambda f, d: d["class_names"].pop() and None, "class_names")),
    Case("model-json-27-thresholds", model(lambda f, d: THRESHOLDS(d).pop() and None, "values")),
    Case("model-json-thresholds-text", model(lambda f, d: THRESHOLDS(d).__setitem__(0, "a"), "values")),
    Case("model-json-thresholds-above-1", model(lambda f, d: THRESHOLDS(d).__setitem__(0, 1.5), "values")),
    Case("model-json-thresholds-null", model(set_key(["variants", "fp32", "thresholds"], None), "thresholds")),
    Case("model-json-tta-3", model(set_key(["tta", "default"], 3), "tta")),
    Case("model-json-tta-text", model(set_key(["tta", "default"], "x"), "tta")),
    Case("model-json-no-preprocess", model(lambda f, d: d.pop("preprocess") and None, "preprocess")),
    Case("model-json-channel-order", model(set_key(["preprocess", "channels"], ["green", "red", "blue", "yellow"]),
                                           "channels")),
    Case("model-json-std-0", model(set_key(["preprocess", "std"], [0, 0, 0, 0]), "std")),
    Case("model-json-no-files", model(set_key(["files"], []), "files")),
    Case("model-json-file-without-sha256", model(lambda f, d: d["files"][0].pop("sha256") and None, "sha256")),
    Case("onnx-sha256-mismatch", model(spoil_file(lambda b: b + b"\0", update_sha=False),
                                       "ensemble.onnx: sha256")),
    Case("onnx-truncated", model(spoil_file(lambda b: b[:len(b) // 2]), "ensemble.onnx: ONNX Runtime cannot load")),
    Case("onnx-is-text", model(spoil_file(lambda b: b"not a model"), "ensemble.onnx: ONNX Runtime cannot load")),
    Case("onnx-missing", model(lambda f, d: (f / "ensemble.onnx").unlink(), "ensemble.onnx: listed in model.json")),
    Case("model-json-is-a-list", model(raw(b"[]"))),
    Case("model-json-is-null", model(raw(b"null"))),
    Case("model-json-thresholds-nan", model(set_key(["variants", "fp32", "thresholds", "1", "values"], ["nan"] * 28))),
    Case("model-json-size-64-for-48-px-graph", model(set_key(["preprocess", "size"], 64))),
    Case("model-json-size-negative", model(set_key(["preprocess", "size"], -5))),
    Case("model-json-size-text", model(set_key(["preprocess", "size"], "48"))),
    Case("model-json-path-up-and-out", model(outside("outside"))),
    Case("model-json-absolute-path", model(outside("absolute"))),
    Case("model-json-path-to-etc-hostname", model(outside("etc"))),
]

SCRIPT_CASES = [
    Case("script-split-per-dir-0", lambda c: ("split_dataset.py", [str(c.tmp), str(c.tmp / "s"), "--per-dir", "0"],
                                              "--per-dir")),
    Case("script-split-source-missing", lambda c: ("split_dataset.py", [str(c.tmp / "none"), str(c.tmp / "s"),
                                                                        "--per-dir", "5"], "none: source folder")),
    Case("script-merge-no-manifest", lambda c: ("merge_dataset.py", [str(c.tmp), str(c.tmp / "m")],
                                                "manifest.csv: missing file")),
]

REFUSALS = [c.param for c in (IDS_CASES + ARG_CASES + MERGE_CASES + SCORE_CASES + FOLDS_CASES + FIT_CASES
                              + EXPORT_CASES + MODEL_CASES + SCRIPT_CASES)]


def entry_point(program):
    if program.endswith(".py"):
        def script(argv):
            run = subprocess.run([sys.executable, str(ROOT / "scripts" / program), *argv], capture_output=True,
                                 text=True)
            sys.stderr.write(run.stderr)
            return run.returncode

        return script
    from export.__main__ import main as export_main
    from train.__main__ import main as train_main

    return {"runtime": runtime_main, "train": train_main, "export": export_main}[program]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("build", REFUSALS)
def test_refused_in_one_line_and_nothing_lost(build, base, tiny_run, tmp_path, capsys):
    ctx = Ctx(base, tmp_path, tiny_run[0])
    program, argv, names = build(ctx)
    before = snapshot(ctx.out)
    try:
        code = entry_point(program)(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert names in lines[0], lines[0]
    assert snapshot(ctx.out) == before  # the previous results are all still there


def test_the_corpus_holds_over_100_bad_inputs():
    assert len(BAD_BYTES) + len(MISSING) + len(UNSAFE) + len(LINKS) + len(REFUSALS) >= 100


def test_hostile_ids_never_break_the_kaggle_files(corpus, tiny_data, capsys):
    # 'x\n', 'x\r', 'cm,x', 'q"uote' are errors.csv rows; the submission stays one row per good Id
    # and `runtime score` accepts it.
    for name in OUTPUTS:
        rows = read_rows(corpus["root"] / "mixed" / name)
        assert all(len(r) == len(rows[0]) for r in rows)
    assert runtime_main(["score", "--submission", str(corpus["root"] / "mixed" / "submission.csv"),
                         "--labels", str(tiny_data / "test_labels.csv")]) == 0
    assert "macro-F1" in capsys.readouterr().out

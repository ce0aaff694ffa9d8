"""What the command lines say: warnings in one style, options ignored on this device said, the
bench item named as typed, --resume offered only where it exists, the decoder in the run summary,
and every option's help with its default."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.__main__ import main as runtime_main
from runtime.backends import make_backend
from runtime.cli import HelpFormatter, dispatch, guarded

ROOT = Path(__file__).resolve().parents[1]


def interrupt(*_):
    raise KeyboardInterrupt


def test_cuda_options_on_the_cpu_are_one_warning_naming_option_and_backend(tiny_deploy, tiny_data, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "runtime", "infer", "--model", str(tiny_deploy[0]), "--images",
                          str(tiny_data / "test"), "--out", str(out), "--backend", "onnxruntime", "--workers", "0",
                          "--decoder", "opencv", "--backend-option", "cuda_graph=1", "--backend-option",
                          "io_binding=1"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    warnings = [line for line in run.stderr.splitlines() if "warning" in line.lower()]
    assert warnings == ["warning: backend option cuda_graph=1 ignored by onnxruntime-cpu (ensemble.onnx, fp32, "
                        "io_binding=1): a CUDA provider option, and this backend runs on the CPU"]  # io_binding acts
    # the run summary says which decoder ran, once; summary.json records it
    assert run.stdout.count("decoder opencv") == 1
    assert json.loads((out / "summary.json").read_text())["decoder"] == "opencv"


def test_an_option_that_acts_is_not_warned_about(spec_cpu, caplog):
    make_backend(spec_cpu, "onnxruntime-cuda", cuda_graph="1", conv_algo="heuristic")  # a GPU run: they act
    make_backend(spec_cpu, "onnxruntime", device="cpu", io_binding="1")
    assert not caplog.records
    make_backend(spec_cpu, "onnxruntime", device="cpu", prefer_nhwc="1", conv_workspace="default")
    assert [r.getMessage().split(" ignored")[0] for r in caplog.records] == \
        ["backend option prefer_nhwc=1", "backend option conv_workspace=default"]


@pytest.fixture
def spec_cpu(tiny_deploy):
    return tiny_deploy[1]


@pytest.mark.parametrize("item, reason", [
    ("onnxruntime:fp32+bogus=1", "onnxruntime takes no option 'bogus' (it takes: cuda_graph, prefer_nhwc, "
                                 "conv_algo, conv_workspace, io_binding)"),
    ("onnxruntime:fp32+cuda_graph", "+cuda_graph is not +KEY=VALUE (e.g. onnxruntime-cuda:fp16+cuda_graph=1)"),
])
def test_a_bad_bench_item_option_names_the_item_as_typed(tiny_deploy, item, reason, capsys):
    assert runtime_main(["bench", "--model", str(tiny_deploy[0]), "--backend", f"onnxruntime:fp32,{item}",
                         "--seconds", "0.1"]) == 2
    assert capsys.readouterr().err == f"error: --backend item {item!r}: {reason}\n"


@pytest.mark.parametrize("program, argv, resumable", [
    ("runtime", ["infer", "--model", "m", "--images", "i", "--out", "o"], True),
    ("runtime", ["score", "--submission", "s", "--labels", "l"], False),
    ("runtime", ["bench", "--model", "m"], False),
    ("runtime", ["merge", "a", "--out", "o", "--ids", "x"], False),
    ("train", ["fit", "--data", "d", "--out", "o"], True),
    ("train", ["synth", "--out", "o"], False),
    ("export", ["onnx", "--run", "r", "--out", "o"], False),
])
def test_ctrl_c_offers_resume_only_to_a_command_that_has_it(program, argv, resumable, capsys):
    module = __import__(f"{program}.__main__", fromlist=["parser"])
    assert dispatch(module.parser(), {argv[0]: interrupt}, argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: interrupted")
    assert ("--resume" in err) == resumable


def test_a_bare_guarded_call_offers_no_resume(capsys):
    assert guarded(interrupt, debug=False) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_logged_warnings_read_as_printed_ones():
    code = ("import logging; from runtime.cli import setup_logging, warn; setup_logging(); "
            "log = logging.getLogger('x'); log.warning('%s: colour image', 'a.png'); warn('b.png: odd'); "
            "log.error('c.png: bad'); log.info('not shown at WARNING')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.stderr == "warning: a.png: colour image\nwarning: b.png: odd\nerror: c.png: bad\n"


def test_no_command_line_warns_in_a_style_of_its_own():
    """Warnings go through runtime.cli (warn, or logging set up by setup_logging): no module prints
    its own 'warning:' line or sets a logging format of its own."""
    own = []
    for path in sorted(p for d in ("runtime", "train", "export", "viewer", "scripts") for p in (ROOT / d).rglob("*.py")):
        text = path.read_text()
        if path == ROOT / "runtime" / "cli.py":
            continue
        if re.search(r"""print\(f?["']warning""", text, re.I) or "%(levelname)s" in text or "basicConfig" in text:
            own.append(str(path.relative_to(ROOT)))
    assert own == []


def _parsers(parser, name):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


@pytest.mark.parametrize("program", ["train", "export", "runtime", "viewer"])
def test_every_option_has_help_and_shows_its_default(program):
    module = __import__(f"{program}.__main__", fromlist=["parser"])
    missing = []
    tops = [(program, module.parser())] + ([("viewer score-cam", module.score_parser())] if program == "viewer" else [])
    for name, parser in (p for top in tops for p in _parsers(top[1], top[0])):
        formatter = HelpFormatter(name)
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = formatter._get_help_string(action)
            if not action.help or not (action.required or "default" in text):
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


def test_fit_help_shows_the_defaults(capsys):
    from train.__main__ import parser

    with pytest.raises(SystemExit):
        parser().parse_args(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 3)", "(default: resnet18)", "(default: 0.001)", "(default: focal)",
                  "(default: DATA/train.csv)", "(default: 8.0)"):
        assert shown in text


def test_viewer_help_shows_what_each_path_option_defaults_to(capsys):
    """The path options default to nothing given; their help says what the viewer does then."""
    from viewer.__main__ import parser

    p = parser()
    helps = {a.option_strings[0]: " ".join(p._get_formatter()._get_help_string(a).split())
             for a in p._actions if a.option_strings}
    assert "(default: none: an empty window" in helps["--data"]
    assert "(default: none: predictions only from --run)" in helps["--model"]
    assert "(default: the run --model's model.json names" in helps["--run"]
    assert "(default: none: open the window)" in helps["--screenshot"]
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    assert "(default: none: open the window)" in " ".join(capsys.readouterr().out.split())


def test_bench_says_which_samples_it_leaves_out(tiny_deploy, tiny_data, tmp_path, caplog):
    """A bench over a folder with unreadable samples times the others and says so in one line."""
    import shutil

    from runtime.bench import bench

    images = tmp_path / "test"
    shutil.copytree(tiny_data / "test", images)
    red = sorted(images.glob("*_red.png"))
    red[0].write_bytes(b"")                                   # a zero-byte PNG
    red[1].with_name(red[1].name.replace("_red", "_blue")).unlink()  # a missing channel
    rows = bench(str(tiny_deploy[0]), "onnxruntime:fp32", [4], str(images), seconds=0.05, workers=0)
    assert {r["images"] for r in rows if "images" in r} == {len(red) - 2}
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line.startswith(f"{images}: 2 of {len(red)} samples cannot be read and are left out of the figures "
                           "(first: ") and line.endswith("; runtime infer's errors.csv lists each)")
    assert "missing blue" in line or f"{red[0]}: " in line  # the first one's file and reason

"""python -m viewer [--data DIR] [--model DEPLOY] [--run RUN] [--sample] | score-cam ...

This file only builds the app and the window (or runs the score)."""

import argparse
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "sample"


def parser():
    p = argparse.ArgumentParser(prog="python -m viewer", description="HPA image and prediction viewer")
    p.add_argument("--data", default="", help="dataset folder (Kaggle layout, with or without train.csv)")
    p.add_argument("--model", default="", help="deployment folder with model.json (predictions)")
    p.add_argument("--run", default="", help="training run folder (Grad-CAM; predictions when no --model)")
    p.add_argument("--sample", action="store_true", help="open the bundled real HPA field")
    p.add_argument("--screenshot", default="", help="save PREFIX-composite.png and PREFIX-cam.png, then exit")
    return p


def score_parser():
    p = argparse.ArgumentParser(prog="python -m viewer score-cam", description="pointing-game localization score")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True, help="a synthetic dataset (with masks/)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--methods", default="gradcam,gradcam++,layercam")
    p.add_argument("--limit", type=int, default=None, help="score only the first N fields")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "score-cam":
        from runtime.cli import dispatch

        return dispatch(_with_command(score_parser()), {"score-cam": _score}, ["score-cam", *argv[1:]])
    args = parser().parse_args(argv)
    from viewer.app import application

    app = application()
    from viewer.session import Session
    from viewer.window import MainWindow

    data = str(SAMPLE) if args.sample else args.data
    model, run = args.model, args.run
    if args.sample and not (model or run) and Path("demo/deploy/model.json").is_file():
        model, run = "demo/deploy", "demo/run"  # the demo's model, when make demo has run
    session = Session(data or None, model or None, run or None)
    window = MainWindow(session, sync=bool(args.screenshot))
    if args.screenshot:
        return _screenshots(window, args.screenshot)
    window.show()
    return app.exec_()


def _with_command(p):
    wrapper = argparse.ArgumentParser(prog=p.prog)
    sub = wrapper.add_subparsers(dest="command", required=True)
    sub.add_parser("score-cam", parents=[p], add_help=False)
    return wrapper


def _score(args):
    from viewer.score_cam import format_scores, pointing_game

    print(format_scores(pointing_game(args.run, args.data, tuple(args.methods.split(",")), args.split, args.limit)))
    return 0


def _screenshots(window, prefix):
    """Offscreen screenshots for the README: the composite alone, then with a CAM overlay."""
    from PyQt5 import QtWidgets

    window.resize(1400, 860)
    window.show()
    labelled = [i for i in window.session.ids if window.session.labels.get(i)]
    if labelled:
        window.id_list.setCurrentRow(window.session.ids.index(labelled[0]))
    QtWidgets.QApplication.processEvents()
    window.auto_contrast()
    window.state.update(show_cam=False)
    QtWidgets.QApplication.processEvents()
    first = window.export_view(f"{prefix}-composite.png")
    window.state.update(show_cam=True)
    QtWidgets.QApplication.processEvents()
    second = window.export_view(f"{prefix}-cam.png")
    print(f"wrote {first} and {second}")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

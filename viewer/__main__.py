"""python -m viewer [--data DIR | --sample] [--model DEPLOY] [--run RUN] | score-cam ...

This file only parses the command line, builds the app and the window (or runs the score)."""

import os
import sys
from pathlib import Path

from runtime.cli import ArgumentParser, positive_int

SAMPLE = Path(__file__).resolve().parent / "sample"
SCREENSHOT_TRIES = 20  # samples --screenshot tries, in turn, until one reads
SCREENSHOT_TIMEOUT_S = 180  # the longest --screenshot waits for one thing (the image, predictions, the CAM)


class ScreenshotFailed(Exception):
    """--screenshot cannot be taken; the message is the one line the user sees."""


def parser():
    p = ArgumentParser(prog="python -m viewer", description="HPA image and prediction viewer")
    p.add_argument("--data", default="", help="image folder (Kaggle layout, with or without train.csv) "
                                              "(default: none: an empty window, File > Open image folder)")
    p.add_argument("--model", default="", help="deployment folder with model.json (predictions) "
                                               "(default: none: predictions only from --run)")
    p.add_argument("--run", default="", help="training run folder (per-fold thresholds; predictions and CAMs "
                                             "when there is no --model) (default: the run --model's model.json "
                                             "names, when that folder exists)")
    p.add_argument("--sample", action="store_true", help="open the bundled real HPA field instead of --data")
    p.add_argument("--pixel-size", type=float, default=0.0, metavar="UM",
                   help="size of one image pixel in micrometres (as shown): draws a scale bar; "
                        "overrides the calibration TIFF files record")
    p.add_argument("--screenshot", default="", metavar="PREFIX",
                   help="save PREFIX-composite.png and PREFIX-cam.png, then exit (default: none: open the window)")
    return p


def score_parser():
    p = ArgumentParser(prog="python -m viewer score-cam", description="pointing-game localisation score")
    p.add_argument("--run", required=True, help="training run folder whose models are scored")
    p.add_argument("--data", required=True, help="a synthetic dataset (with masks/)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="which of the dataset's splits")
    p.add_argument("--methods", default="layercam,gradcam,gradcam++",
                   help="comma-separated: layercam, gradcam, gradcam++, cbam-attention")
    p.add_argument("--limit", type=positive_int, default=None, help="score only the first N fields (default: all)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "score-cam":
        from runtime.cli import dispatch

        return dispatch(_with_command(score_parser()), {"score-cam": _score}, ["score-cam", *argv[1:]])
    from runtime.cli import guarded, setup_logging

    args = parser().parse_args([a for a in argv if a != "--debug"])
    setup_logging()  # warnings read as every command line's: warning: <file>: <reason>
    # a bad --data/--model/--run, a failed or timed-out --screenshot: one line
    return guarded(_view, args, debug="--debug" in argv or None, user_errors=(ScreenshotFailed,))


def build(args, sync=False):
    """(app, window) for parsed arguments: what ``python -m viewer`` shows."""
    from viewer.session import Session

    # *Decision*: no default model. Opening demo/deploy when it exists relative to the current
    # directory would make what --sample shows depend on where the viewer was started.
    # The session (files, model.json, run) is checked before Qt starts, so a bad path is one line
    # even where no display is available.
    if not 0 <= getattr(args, "pixel_size", 0.0) < 1e4:
        raise ValueError(f"--pixel-size must be a size in um, 0 or more, got {args.pixel_size:g}")
    session = Session(str(SAMPLE) if args.sample else (args.data or None), args.model or None, args.run or None)
    _check_display()
    from viewer.app import application

    app = application()
    from viewer.window import MainWindow

    window = MainWindow(session, sync=sync)
    window.set_pixel_size(getattr(args, "pixel_size", 0.0))  # > 0 overrides the files' calibration
    return app, window


def _check_display():
    import os

    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not platform and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError("no display: run it on a desktop, under xvfb-run, or with QT_QPA_PLATFORM=offscreen "
                         "(with --screenshot)")


def _view(args):
    app, window = build(args)
    if args.screenshot:
        return _screenshots(app, window, args.screenshot)
    window.show()
    return app.exec_()


def _with_command(p):
    wrapper = ArgumentParser(prog=p.prog)
    sub = wrapper.add_subparsers(dest="command", required=True)
    sub.add_parser("score-cam", parents=[p], add_help=False)
    return wrapper


def _score(args):
    from viewer.score_cam import format_scores, pointing_game

    print(format_scores(pointing_game(args.run, args.data, tuple(args.methods.split(",")), args.split, args.limit)))
    return 0


def _screenshots(app, window, prefix, timeout=None):
    """PREFIX-composite.png and PREFIX-cam.png: the window at 1400x860 on the first labelled Id
    with auto contrast, without and with its CAM overlay. In a real window (xvfb-run or a
    desktop) they are grabbed from the screen; offscreen (make demo) the window renders itself.

    Every wait is bounded (``SCREENSHOT_TIMEOUT_S`` each) and ends at the first failed worker
    request (the image, the predictions, the CAM): either is ``ScreenshotFailed``, one line and
    exit status 2, never a screenshot of a half-shown window. *Decision*: a folder without
    images is refused the same way (nothing worth a screenshot), not captured empty."""
    import time

    from viewer.app import headless

    timeout = SCREENSHOT_TIMEOUT_S if timeout is None else timeout

    def check(what, tolerate=()):
        failures = [f for f in window.failures if f[0] not in tolerate]
        if failures:
            kind, sample_id, message = failures[0]
            request = {"load": f"reading {sample_id}", "probs": f"predicting {sample_id}",
                       "predict": "predicting the folder", "cam": f"the CAM of {sample_id}"}.get(kind, kind)
            raise ScreenshotFailed(f"{message} (--screenshot: {request} failed while waiting for {what})")

    def settle(condition, what, tolerate=()):
        end = time.monotonic() + timeout
        while not condition():
            check(what, tolerate)
            if time.monotonic() > end:
                raise ScreenshotFailed(f"--screenshot: gave up after waiting {timeout:g} s for {what}")
            app.processEvents()
            time.sleep(0.01)
        for _ in range(10):
            app.processEvents()
        check(what, tolerate)

    def grab(path):
        screen = app.primaryScreen()
        pixmap = window.grab() if headless() else screen.grabWindow(window.winId())
        if not pixmap.save(str(path), "PNG"):
            raise OSError(f"{path}: could not write the PNG")
        return path

    try:
        if not window.session.listed_ids():
            raise ScreenshotFailed(f"{window.session.dataset.empty_reason(cli=True)}; nothing for --screenshot")
        window.resize(1400, 860)
        window.show()
        labelled = [i for i in window.session.ids if window.session.labels.get(i)]
        # The first sample that reads: one bad file costs its own sample, not the screenshots (at
        # most SCREENSHOT_TRIES are tried); any other failure (the model) still ends them at once.
        candidates = (labelled + [i for i in window.session.listed_ids() if i not in set(labelled)])
        unreadable = []
        for sample_id in candidates[:SCREENSHOT_TRIES]:
            window.id_panel.select(sample_id)
            settle(lambda: window.current.sample_id == sample_id
                   and (window.current.sample is not None or bool(window.current.error)), "the image",
                   tolerate=("load",))
            if window.current.sample is not None:
                break
            unreadable.append((sample_id, window.current.error))
            window.failures[:] = [f for f in window.failures if f[0] != "load"]  # that sample's own error
        else:
            first, why = unreadable[0]
            raise ScreenshotFailed(f"{why} (--screenshot: none of the first {len(unreadable)} samples could be read; "
                                   f"{first} was the first)")
        window.auto_contrast()
        window.state.update(show_cam=False)
        settle(lambda: window.current.probs is not None or not window.models.can_predict, "the predictions")
        first = grab(f"{prefix}-composite.png")
        window.state.update(show_cam=True)
        settle(lambda: window.current.cam is not None or not window.models.can_explain, "the CAM")
        settle(window.strip_ready, "the strip of class maps", tolerate=("strip",))  # a failed strip says so on it
        second = grab(f"{prefix}-cam.png")
        print(f"wrote {first} and {second}")
        return 0
    finally:
        window.close()


def _exit(code):
    """Exit with ``code``; a worker thread still blocked in a request (viewer.worker.stuck) is not
    waited for, as Qt would abort the process when destroying it."""
    worker = sys.modules.get("viewer.worker")
    if worker is not None and worker.stuck:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())

"""What a CAM request may ask for, checked before any torch work (torch-free, so the window and
the state use the same names and checks)."""

from runtime.classes import NUM_CLASSES

# *Decision*: the viewer's menu offers only the methods that localise better than a pointer
# that needs no model (the brightest pixel of the blurred green channel: 0.641 on the demo's
# held-out set; `python -m viewer score-cam`). LayerCAM 0.906 and Grad-CAM 0.820 do. Grad-CAM++
# (0.656: 0.015 above, less than the 0.018 standard error of either score) and the CBAM
# attention (0.334, the image centre's level: one class-blind map on a 3x3 grid) do not; they
# stay available to score-cam and CamModels, so they can be measured again on another model.
CAM_METHODS = ("layercam", "gradcam")
SCORE_ONLY_METHODS = ("gradcam++", "cbam-attention")
ALL_METHODS = CAM_METHODS + SCORE_ONLY_METHODS
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM",
                 "cbam-attention": "CBAM attention"}


def check_fold(fold, folds):
    """'mean' or 'fold<k>' with k < folds; returns it, or raises ValueError."""
    if fold == "mean":
        return fold
    text = str(fold)
    if not (text.startswith("fold") and text[4:].isascii() and text[4:].isdecimal() and int(text[4:]) < folds):
        raise ValueError(f"unknown model {fold!r}; valid: mean, " + ", ".join(f"fold{k}" for k in range(folds)))
    return text


def check_cam_request(classes, method, fold, folds, methods=ALL_METHODS):
    """Classes as a list of ints in 0..27, the method one of ``methods``, the fold valid for
    ``folds`` models. Raises ValueError naming the bad value."""
    if method not in methods:
        raise ValueError(f"unknown CAM method {method!r}; valid: {', '.join(methods)}")
    check_fold(fold, folds)
    out = []
    for c in classes:
        if isinstance(c, bool) or not float(c).is_integer() or not 0 <= int(c) < NUM_CLASSES:
            raise ValueError(f"class {c!r} is not a class index 0..{NUM_CLASSES - 1}")
        out.append(int(c))
    return out


# ---------------------------------------------------------------------- which classes to explain
MARKS = {"TP": "true positive: predicted and true", "FN": "missed: true, not predicted",
         "FP": "false positive: predicted, not true", "pred": "predicted (ground truth unknown)",
         "true": "true (no prediction yet)"}
MAX_STRIP = 8   # at most this many maps in the strip (one CAM request; a field has 1-4 labels as a rule)


def review_classes(probs, predicted, truth, limit=MAX_STRIP):
    """[(class, mark)] for every predicted and every true class of a sample, the order the strip
    shows them: missed classes (FN), then false positives (FP), then the correct ones (TP), each
    by falling probability (``probs``, or class order without them). ``predicted`` None: no
    prediction yet (only the true classes, marked "true"); ``truth`` None: unknown (the predicted
    ones, marked "pred"). At most ``limit`` entries."""
    p = (lambda c: -float(probs[c])) if probs is not None else (lambda c: 0.0)
    pred = set(predicted) if predicted is not None else set()
    true = set(truth) if truth is not None else set()
    if truth is None:
        groups = [("pred", pred)]
    elif predicted is None:
        groups = [("true", true)]
    else:
        groups = [("FN", true - pred), ("FP", pred - true), ("TP", pred & true)]
    out = [(int(c), mark) for mark, classes in groups for c in sorted(classes, key=lambda c: (p(c), c))]
    return out[:limit]


def default_cam_class(probs, predicted, truth, focus=None):
    """The class the main map shows when none is chosen (the class menu's "auto").

    *Decision*: on an error (truth known and the predicted set differs) the map explains the
    mistake: the missed class (FN) first, else the false positive (FP); among several, the one
    with the highest probability, the nearest miss (its map shows what the model did see; a
    class at p 0.01 usually has no positive evidence to show). ``focus`` (the class the error
    summary filters on) wins when it is one of the sample's errors. Otherwise the top predicted
    class (argmax), as before. None while there are no probabilities."""
    if probs is None:
        return None
    if predicted is not None and truth is not None:
        errors = [(c, m) for c, m in review_classes(probs, predicted, truth, limit=None) if m in ("FN", "FP")]
        if focus is not None and any(c == focus for c, _ in errors):
            return int(focus)
        if errors:
            return errors[0][0]
    return int(max(range(len(probs)), key=lambda c: probs[c]))

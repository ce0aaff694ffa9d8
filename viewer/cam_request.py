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

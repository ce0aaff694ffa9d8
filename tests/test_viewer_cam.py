"""The viewer's torch side (viewer/cam.py, viewer/score_cam.py) and the overlay drawing."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.errors import DataError
from runtime.preprocess import preprocess
from runtime.reader import ImageFolder
from train.model import build_model
from train.run import Run
from viewer.cam import CamModels, LayerTap, _view_origins, gradient_cams, spatial_attention, target_layers
from viewer.render import OVERLAY_STYLES, blend, composite_gamma, overlay_rgba

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cams(tiny_run):
    with CamModels([(p, None) for p in Run(tiny_run[0]).checkpoints()]) as models:
        yield models


@pytest.fixture(scope="module")
def batch(tiny_data, cams):
    folder = ImageFolder(tiny_data / "test")
    return np.stack([preprocess(folder.read(i), cams.preprocess) for i in folder.ids()[:3]])


def test_cam_stack_never_loads_triton_or_torchvision(tiny_run):
    # What crashes the first CAM in a real window: triton's LLVM against Mesa's.
    code = ("import sys, numpy as np; from viewer.cam import CamModels; from train.run import Run; "
            f"m = CamModels([(p, None) for p in Run({str(tiny_run[0])!r}).checkpoints()]).__enter__(); "
            "m.cam(np.zeros((1, 4, 48, 48), np.float32), [3], 'layercam', views=4); "
            "print(sorted({k.split('.')[0] for k in sys.modules} & {'triton', 'torchvision', 'pytorch_grad_cam'}), "
            "'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False"], out.stdout + out.stderr[-2000:]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_gradient_cams_match_the_grad_cam_package(cams, batch, method):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reference = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM}[method]
    model, classes, x = cams.models[0], [0, 5, 25], torch.from_numpy(batch)
    layer = model.layer2[-1]
    cam = reference(model=model, target_layers=[layer])
    try:
        expected = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    finally:
        cam.activations_and_grads.release()
    (raw,) = gradient_cams(model, x, classes, method, [layer])
    ours = torch.nn.functional.interpolate(raw[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].numpy()
    for mine, theirs in zip(ours, expected):
        if theirs.max() > 0:   # the package min-max scales each map
            mine = (mine - mine.min()) / max(mine.max() - mine.min(), 1e-12)
            np.testing.assert_allclose(mine, theirs, atol=1e-4)


def test_layer_tap_removes_its_hook_and_never_swallows():
    model = build_model("resnet18", width=8).eval()
    with pytest.raises(IndexError):
        with LayerTap(model.layer2[-1]) as tap:
            model(torch.zeros(1, 4, 32, 32))
            assert tap.output.shape[1] == 16
            raise IndexError("inside")
    assert not model.layer2[-1]._forward_hooks


def test_target_layers_follow_the_input_size():
    model = build_model("resnet18", width=8)
    assert target_layers(model, 96) == [model.layer2[-1], model.layer1[-1]]
    assert target_layers(model, 256) == [model.layer3[-1], model.layer2[-1]]
    assert target_layers(model, 512) == [model.layer4[-1], model.layer3[-1]]


def test_attention_is_read_through_a_hook_that_goes_away():
    model = build_model("resnet18", width=8).eval()
    att = spatial_attention(model, torch.randn(2, 4, 64, 64))
    assert att.shape == (2, 2, 2) and float(att.min()) >= 0 and float(att.max()) <= 1
    assert not model.layer4[-1].attention.spatial.conv._forward_hooks
    with pytest.raises(ValueError, match="no CBAM"):
        spatial_attention(build_model("resnet18", attention="none", width=8).eval(), torch.randn(1, 4, 64, 64))


def test_view_origins_undo_runtime_views():
    from runtime.tta import views

    image = np.random.default_rng(0).random((1, 1, 9, 9))
    for view, origin in zip(views(image, 8), _view_origins(9, 8)):
        np.testing.assert_array_equal(image.reshape(-1)[origin], view.reshape(-1))


def test_cams_average_views_and_folds(cams, batch):
    one = cams.cam(batch, [0, 5, 25], "layercam", "fold0")
    four = cams.cam(batch, [0, 5, 25], "layercam", "mean", views=4)
    for maps in (one, four):
        assert maps.shape == (3, 48, 48) and np.isfinite(maps).all()
        assert np.allclose(maps.reshape(3, -1).max(1), 1) or (maps == 0).any()
    assert not np.allclose(one, four)


@pytest.mark.parametrize("classes, method, fold", [([28, 0, 0], "gradcam", "mean"), ([-1, 0, 0], "gradcam", "mean"),
                                                   ([1.5, 0, 0], "gradcam", "mean"), ([0, 0, 0], "nope", "mean"),
                                                   ([0, 0, 0], "gradcam", "fold2"), ([0, 0], "gradcam", "mean")])
def test_bad_requests_raise(cams, batch, classes, method, fold):
    with pytest.raises(ValueError):
        cams.cam(batch, classes, method, fold)


def test_a_non_finite_map_raises(cams, batch, monkeypatch):
    import viewer.cam

    monkeypatch.setattr(viewer.cam, "gradient_cams", lambda *a, **k: [torch.full((3, 6, 6), float("nan"))])
    with pytest.raises(RuntimeError, match="non-finite"):
        cams.cam(batch, [0, 1, 2], "gradcam")


def test_checkpoints_are_checked_before_loading(tiny_run, tmp_path):
    path = Run(tiny_run[0]).checkpoint(0)
    from runtime.model_spec import sha256_of

    with CamModels([(path, sha256_of(path))]) as ok:
        assert ok.folds == 1
    with pytest.raises(DataError, match="sha256"):
        CamModels([(path, "0" * 64)]).__enter__()
    with pytest.raises(DataError, match="not found"):
        CamModels([(tmp_path / "gone.pt", None)]).__enter__()


def test_probabilities_average_the_views(cams, batch):
    from runtime.tta import predict_views

    single = cams.probabilities(batch, "fold1")
    with torch.inference_mode():
        direct = torch.sigmoid(cams.models[1](torch.from_numpy(batch))).numpy()
    np.testing.assert_allclose(single, direct, rtol=1e-5, atol=1e-6)
    four = cams.probabilities(batch, "fold1", views=4)
    np.testing.assert_allclose(four, predict_views(lambda b: cams.probabilities(b, "fold1"), batch, 4), rtol=1e-5)


# ---------------------------------------------------------------------- pointing game
def test_pointing_game_scores_and_baselines(tiny_run, tiny_data, monkeypatch):
    from train.synth import load_masks
    from viewer import score_cam

    results = score_cam.pointing_game(tiny_run[0], tiny_data, ("layercam",), limit=4, views=1)
    assert set(results) == {"layercam", "centre", "random", "green"}
    pairs = results["layercam"]["pairs"]
    assert all(r["pairs"] == pairs for r in results.values())
    text = score_cam.format_scores(results)
    assert "green max" in text and "below the green-max pointer" in text

    # The scoring itself: a "CAM" that is the true region always hits, its complement never does.
    from runtime.labels import read_labels

    labels = list(read_labels(tiny_data / "test_labels.csv").items())[:4]
    regions = [load_masks(tiny_data / "masks" / f"{i}.npz")[c].astype(np.float32) for i, cs in labels for c in cs]
    for flip, expected in ((False, 1.0), (True, 0.0)):
        queue = list(regions)

        def fake(self, x, classes, method="gradcam", fold="mean", views=1):
            out = [queue.pop(0) for _ in classes]
            return np.stack([1 - m if flip else m for m in out])

        monkeypatch.setattr(score_cam.CamModels, "cam", fake)
        assert score_cam.pointing_game(tiny_run[0], tiny_data, ("layercam",), limit=4)["layercam"]["overall"] == expected


def test_green_baseline_points_at_the_brightest_green():
    from viewer.score_cam import baseline_hit

    sample = np.zeros((64, 64, 4), np.uint8)
    sample[40:46, 10:16, 1] = 255
    mask = np.zeros((64, 64), bool)
    mask[38:48, 8:18] = True
    assert baseline_hit("green", sample, mask) == 1.0
    assert baseline_hit("centre", sample, mask) == 0.0
    assert baseline_hit("random", sample, mask) == pytest.approx(mask.mean())


# ---------------------------------------------------------------------- drawing (Qt-free)
def test_overlay_leaves_low_values_transparent_and_uses_no_channel_colour():
    yy, xx = np.mgrid[:64, :64]
    cam = np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / 80.0).astype(np.float32)
    for style in OVERLAY_STYLES:
        rgba = overlay_rgba(cam, style, scale=2)
        assert rgba.shape == (128, 128, 4)
        low = np.kron(cam < 0.15, np.ones((2, 2), bool))
        assert (rgba[..., 3][low] == 0).mean() > 0.95            # the low end is see-through
        drawn = rgba[..., 3] > 0
        r, g, b = (rgba[..., i][drawn].astype(int) for i in range(3))
        # white/grey isolines, violet-magenta-white fill: never a red, green, blue or yellow hue
        assert (b >= g).all() and not ((r > 200) & (g > 200) & (b < 100)).any()
    assert not overlay_rgba(np.zeros((16, 16), np.float32), "heat")[..., 3].any()   # nothing drawn


def test_blend_and_gamma():
    rgb = np.full((4, 4, 3), 100, np.uint8)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 255, 255, 255)
    out = blend(rgb, rgba, 0.5)
    assert out[0, 0, 0] == 178 and (out[1:] == 100).all()
    sample = np.random.default_rng(1).integers(0, 255, (8, 8, 4), dtype=np.uint8)
    levels, on = ((0.0, 255.0),) * 4, (True,) * 4
    from runtime.composite import composite

    np.testing.assert_array_equal(composite_gamma(sample, on, levels, (1.0,) * 4), composite(sample, on, levels))
    brighter = composite_gamma(sample, (False, False, True, False), levels, (1, 1, 0.5, 1))
    assert (brighter[..., 2].astype(int) >= composite(sample, (False, False, True, False), levels)[..., 2]).all()

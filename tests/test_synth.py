import hashlib

import numpy as np

from runtime.classes import CHANNELS, REAL_CLASS_COUNTS
from runtime.labels import read_ids, read_labels
from runtime.reader import ImageFolder
from train.synth import generate, load_masks, render_field, sample_labels


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_kaggle_layout(tiny_data):
    labels = read_labels(tiny_data / "train.csv")
    assert len(labels) == 48
    folder = ImageFolder(tiny_data / "train")
    assert folder.ids() == sorted(labels)
    for sample_id in list(labels)[:3]:
        for ch in CHANNELS:
            assert (tiny_data / "train" / f"{sample_id}_{ch}.png").is_file()
        sample = folder.read(sample_id)
        assert sample.shape == (64, 64, 4) and sample.dtype == np.uint8
    test_ids = read_ids(tiny_data / "sample_submission.csv")
    assert len(test_ids) == 12 and set(test_ids) == set(read_labels(tiny_data / "test_labels.csv"))
    assert ImageFolder(tiny_data / "test").ids() == sorted(test_ids)


def test_same_seed_same_bytes_whatever_the_process_count(tmp_path):
    generate(tmp_path / "a", images=6, size=48, seed=7, min_per_class=0, workers=1)
    generate(tmp_path / "b", images=6, size=48, seed=7, min_per_class=0, workers=2)
    generate(tmp_path / "c", images=6, size=48, seed=8, min_per_class=0, workers=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_every_class_present_and_real_imbalance_kept():
    labels = sample_labels(2000, np.random.default_rng(0), min_per_class=25)
    counts = np.bincount([c for row in labels for c in row], minlength=28)
    assert counts.min() >= 25
    assert counts.argmax() == 0  # Nucleoplasm is the commonest class, as in the real set
    assert 0.36 < counts[0] / 2000 < 0.46  # real: 41 %
    assert counts[25] > counts[2] > counts[27]  # Cytosol > Nucleoli > Rods & rings
    real = np.asarray(REAL_CLASS_COUNTS) / sum(REAL_CLASS_COUNTS)
    common = real * 2000 * 1.7 > 60  # classes well above the floor keep their real share
    share = counts / counts.sum()
    np.testing.assert_allclose(share[common], real[common], rtol=0.3)
    sizes = np.bincount([len(row) for row in labels])
    assert sizes[1] > sizes[3] and sizes[2] > sizes[3] and sizes[0] == 0


def test_masks_mark_each_present_class_and_green_carries_it(tiny_data):
    labels = read_labels(tiny_data / "train.csv")
    for sample_id, classes in list(labels.items())[:10]:
        masks = load_masks(tiny_data / "masks" / f"{sample_id}.npz")
        assert sorted(masks) == classes
        for c in classes:
            assert masks[c].shape == (64, 64) and masks[c].any()


def test_each_class_draws_green_inside_its_mask():
    for c in range(28):
        sample, masks = render_field(np.random.default_rng(c), 128, [c])
        green = sample[..., 1].astype(float)
        inside, outside = green[masks[c]].mean(), green[~masks[c]].mean()
        assert inside > outside + 15, f"class {c}: green inside {inside:.1f} vs outside {outside:.1f}"


def test_classes_draw_different_patterns():
    rng_state = 5
    greens = [render_field(np.random.default_rng(rng_state), 96, [c])[0][..., 1].astype(float) for c in range(28)]
    for a in range(28):
        for b in range(a + 1, 28):
            assert np.abs(greens[a] - greens[b]).mean() > 0.5, f"classes {a} and {b} look the same"

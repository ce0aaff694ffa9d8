import numpy as np

from train.analyze import analyze, label_stats


def test_counts_and_cooccurrence_match_hand_computed(tmp_path):
    labels = {"a": [0, 25], "b": [0], "c": [25, 2], "d": [0, 2, 25]}
    counts, per_image, co, corr = label_stats(labels)
    assert counts[0] == 3 and counts[25] == 3 and counts[2] == 2 and counts.sum() == 8
    assert per_image == {1: 1, 2: 2, 3: 1}
    assert co[0, 25] == co[25, 0] == 2 and co[2, 25] == 2 and co[0, 2] == 1 and co[0, 0] == 3
    y0 = np.array([1, 1, 0, 1])
    y25 = np.array([1, 0, 1, 1])
    assert abs(corr[0, 25] - np.corrcoef(y0, y25)[0, 1]) < 1e-9
    assert corr[5, 5] == 0  # a class with no images has no correlation (not NaN)


def test_report_figures_are_written(tiny_data, tiny_run, tmp_path):
    figures = analyze(tiny_data, tmp_path, tiny_run[0])
    names = {p.name for p in figures}
    assert {"label_distribution.png", "labels_per_image.png", "cooccurrence.png", "correlation.png", "gallery.png",
            "training_curves.png", "per_class_f1.png", "pr_curves.png"} <= names
    for p in figures:
        assert p.stat().st_size > 5000, p
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures)

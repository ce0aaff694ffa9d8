"""Hostile input for train.cache: a garbled manifest, a cache folder that cannot be written."""
import os

import numpy as np
import pytest

from runtime.errors import DataError
from runtime.labels import read_labels
from runtime.preprocess import Preprocess
from runtime.reader import ImageFolder
from train import cache


def _setup(tiny_data):
    return ImageFolder(tiny_data / "train"), list(read_labels(tiny_data / "train.csv")), Preprocess(size=16)


def test_garbled_manifest_rebuilds_rather_than_trusting_the_file(tiny_data, tmp_path):
    folder, ids, pp = _setup(tiny_data)
    _, _, first = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    first = np.array(first)
    (tmp_path / "c" / cache.MANIFEST).write_text("{not json")
    cache.images_file(tmp_path / "c", cache.cache_key(folder, ids, pp)).write_bytes(b"garbage")
    _, _, again = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    assert np.array_equal(again, first)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only folders")
def test_read_only_cache_folder_is_one_line_naming_it(tiny_data, tmp_path):
    folder, ids, pp = _setup(tiny_data)
    d = tmp_path / "c"
    d.mkdir()
    d.chmod(0o555)
    try:
        with pytest.raises((DataError, OSError)) as err:
            cache.build_cache(d, folder, ids, pp, progress=False)
        assert "\n" not in str(err.value) and str(d) in str(err.value)
    finally:
        d.chmod(0o755)


def test_a_complete_cache_in_a_read_only_folder_is_read(tiny_data, tmp_path):
    folder, ids, pp = _setup(tiny_data)
    d = tmp_path / "c"
    rows, _, images = cache.build_cache(d, folder, ids, pp, progress=False)
    d.chmod(0o555)
    try:
        again = cache.build_cache(d, folder, ids, pp, progress=False)
        assert again[0] == rows and np.array_equal(again[2], images)
    finally:
        d.chmod(0o755)

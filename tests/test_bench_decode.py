"""scripts/bench_decode.py: one-thread decoding per channel file, layer by layer (the library's own
call, the toolkit's imdecode, the reader), for each decoder, and the scaling table."""

import cv2
import numpy as np
import pytest

from runtime.bench_decode import LAYERS, format_per_channel, main, per_channel, setup_per_call
from runtime.decoders import wuffs_available

DECODERS = ["opencv", "wuffs"] if wuffs_available() else ["opencv"]


@pytest.fixture
def channels(tmp_path):
    """One 48x40 gray PNG per channel name, the files bench_decode --channels takes."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "single"
    folder.mkdir()
    for c in ("red", "green", "blue", "yellow"):
        cv2.imwrite(str(folder / f"a_{c}.png"), rng.integers(0, 256, (48, 40), dtype=np.uint8))
    return folder


def test_per_channel_times_every_layer_of_every_decoder(channels):
    ms = per_channel(channels, DECODERS, passes=2)
    assert list(ms) == DECODERS
    for layers in ms.values():
        assert list(layers) == list(LAYERS)
        assert all(wall > 0 and cpu > 0 for wall, cpu in layers.values())
    table = format_per_channel(ms, setup_per_call(DECODERS, calls=5))
    lines = table.splitlines()
    assert len(lines) == 2 + len(LAYERS) and "1x1 PNG" in lines[-1]
    assert all(f"{d} CPU (wall) ms" in lines[0] for d in DECODERS)
    if len(DECODERS) == 2:  # the ratio per layer is Wuffs' lead in CPU time, then in wall time
        o, w = ms["opencv"]["reader"], ms["wuffs"]["reader"]
        assert lines[3].endswith(f"{o[1] / w[1]:.2f}x ({o[0] / w[0]:.2f}x)")


def test_per_channel_refuses_a_folder_without_pngs(tmp_path):
    with pytest.raises(ValueError, match="no .png files"):
        per_channel(tmp_path, ["opencv"])


def test_bench_decode_prints_the_layers_and_the_scaling(channels, capsys):
    assert main(["--channels", str(channels), "--samples", "4", "--size", "16", "--workers", "2",
                 "--kinds", "threads", "--rounds", "1", "--passes", "1", "--decoders", ",".join(DECODERS)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "physical" in out and "load average" in out
    assert "+ reader (decode_channel" in out and "set-up before any pixel" in out
    assert "scaling" in out and "threads" in out

import pytest
import torch
import torchvision

from train.model import CBAM, Bottleneck, BasicBlock, adapt_stem_weights, build_model, load_pretrained


@pytest.mark.parametrize("size", [(64, 64), (96, 80), (129, 129)])
def test_four_channels_any_size_28_logits(size):
    model = build_model("resnet18", width=16).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, *size))
    assert out.shape == (2, 28)


@pytest.mark.parametrize("arch, blocks", [("resnet18", 8), ("resnet34", 16), ("resnet50", 16)])
def test_cbam_in_every_residual_block(arch, blocks):
    model = build_model(arch, width=8)
    residual = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert len(residual) == blocks
    assert all(isinstance(b.attention, CBAM) for b in residual)
    assert model.conv1.in_channels == 4


def test_plain_resnet_is_the_same_code_without_attention():
    model = build_model("resnet18", attention="none", width=8)
    assert not any(isinstance(m, CBAM) for m in model.modules())


def test_cbam_reduction_and_spatial_kernel():
    cbam = CBAM(64)
    assert cbam.channel.mlp[0].out_channels == 64 // 16
    assert cbam.spatial.conv.kernel_size == (7, 7) and cbam.spatial.conv.in_channels == 2


def test_forward_leaves_no_state_behind():
    # The viewer reads CBAM attention through a forward hook it removes; the model keeps nothing.
    model = build_model("resnet18", width=8).eval()
    before = {k: v for k, v in vars(model.layer4[-1].attention.spatial).items() if not k.startswith("_")}
    with torch.no_grad():
        model(torch.randn(1, 4, 64, 64))
    after = {k: v for k, v in vars(model.layer4[-1].attention.spatial).items() if not k.startswith("_")}
    assert after == before and not any(isinstance(v, torch.Tensor) for v in after.values())


def test_unknown_arch_lists_valid_keys():
    with pytest.raises(ValueError, match="resnet18"):
        build_model("vgg")


def test_torchvision_weights_load_with_a_4_channel_stem(tmp_path):
    tv = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = build_model("resnet18")
    missing = load_pretrained(model, path)
    assert all("attention" in k or k.startswith("fc.") for k in missing)
    stem = model.conv1.weight.detach()
    torch.testing.assert_close(stem[:, :3], tv.conv1.weight)
    torch.testing.assert_close(stem[:, 3], tv.conv1.weight[:, :2].mean(1))
    torch.testing.assert_close(model.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)


def test_adapt_stem_weights_shape():
    assert adapt_stem_weights(torch.randn(8, 3, 7, 7)).shape == (8, 4, 7, 7)

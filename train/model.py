"""CBAM-ResNet: torchvision-compatible ResNet-18/34/50 with an attention module in every block.

Attention is passed in as a factory (timm's way), so CBAM-ResNet and plain ResNet are the same
code with one argument changed. Parameter names follow torchvision's ResNet, so a local
torchvision weights file loads into it (the RGB stem adapted to 4 channels by
:func:`adapt_stem_weights`). ``forward = forward_features + forward_head``: Grad-CAM hooks a
residual stage, export gets a clean graph. The modules keep no state between forwards: whoever
wants an intermediate map (the viewer's CAM and CBAM attention) registers a forward hook and
removes it when done.
"""

import torch
import torch.nn.functional as F
from torch import nn

from runtime.classes import NUM_CLASSES
from runtime.errors import loading


class ChannelAttention(nn.Module):
    """CBAM channel attention: average- and max-pooled features through one shared MLP."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1, bias=False)
        )

    def forward(self, x):
        # max by pooling, not amax: amax's backward (a tie-sharing mask, summed and cast) made
        # CBAM's share of a CPU training step ~4% slower; the forward is the same.
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: channel-wise mean and max through a 7x7 convolution."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        # The attention map is sigmoid(conv(stats)); a forward hook on ``conv`` sees its logits.
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values], dim=1)
        return x * torch.sigmoid(self.conv(stats))


class CBAM(nn.Module):
    """Woo et al. 2018: channel attention, then spatial attention."""

    def __init__(self, channels, reduction=16, kernel_size=7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x):
        return self.spatial(self.channel(x))


def _bn(c):
    return nn.BatchNorm2d(c)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, attention=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.attention = attention(planes) if attention else nn.Identity()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, attention=None):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = _bn(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.attention = attention(out_planes) if attention else nn.Identity()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attention(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
ATTENTIONS = {"cbam": CBAM, "none": None}


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=NUM_CLASSES, in_channels=4, width=64, attention=CBAM, dropout=0.0):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = _bn(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for i, blocks in enumerate(layers):
            stages.append(self._make_layer(block, width * 2 ** i, blocks, 1 if i == 0 else 2, attention))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # The head pools both the average and the maximum of the last feature map: a pattern that
        # occupies a few pixels of one cell (a cytokinetic bridge, an MTOC) all but vanishes in
        # an average alone.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.maxpool_head = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.num_features = self.inplanes
        self.fc = nn.Linear(2 * self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # No zero-init of the residual branches' last BN (torchvision's optional trick): with CBAM's
        # sigmoid gates also halving each branch at the start, it slowed short CPU runs down.

    def _make_layer(self, block, planes, blocks, stride, attention):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False), _bn(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, attention)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, attention=attention) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, features):
        pooled = torch.cat([self.avgpool(features), self.maxpool_head(features)], dim=1)
        return self.fc(self.dropout(torch.flatten(pooled, 1)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def build_model(arch="resnet18", attention="cbam", width=64, num_classes=NUM_CLASSES, in_channels=4, dropout=0.0):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {sorted(ARCHS)}")
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; valid: {sorted(ATTENTIONS)}")
    block, layers = ARCHS[arch]
    return ResNet(block, layers, num_classes, in_channels, width, ATTENTIONS[attention], dropout)


def adapt_stem_weights(rgb_weight):
    """(C, 3, k, k) RGB stem -> (C, 4, k, k) in R, G, B, Y order; yellow starts as mean(red, green)."""
    yellow = rgb_weight[:, :2].mean(dim=1, keepdim=True)
    return torch.cat([rgb_weight, yellow], dim=1)


def load_pretrained(model, path):
    """Load a torchvision ResNet weights file (a state dict saved with torch.save): a local file,
    or the torch hub file ``train.pretrained`` resolved for ``--pretrained imagenet``; see
    ``load_pretrained_state``. Returns the list of parameter names that were not loaded."""
    with loading(path, "not a readable weights file"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    return load_pretrained_state(model, state, path)


def load_pretrained_state(model, state, path):
    """Load a torchvision ResNet state dict into ``model``; ``path`` names it in errors.

    The stem is adapted to 4 channels, the 1000-class head and anything CBAM-specific are left
    as initialised. Returns the list of parameter names that were not loaded.
    """
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise ValueError(f"{path}: not a torchvision ResNet state dict (no conv1.weight)")
    state = dict(state)
    if state["conv1.weight"].shape[1] == 3:
        state["conv1.weight"] = adapt_stem_weights(state["conv1.weight"])
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith("fc.")}
    if len(usable) < len([k for k in state if not k.startswith("fc.")]) // 2:
        raise ValueError(f"{path}: weights do not match this architecture (only {len(usable)} tensors fit)")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))

import math

import torch

from train.losses import BCELoss, FocalLoss


def test_focal_loss_against_hand_computed_value():
    logits = torch.tensor([[2.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0]])
    # class 0: p = sigmoid(2) = 0.880797, p_t = p, loss = (1 - p)^2 * -log(p)
    p0 = 1 / (1 + math.exp(-2.0))
    l0 = (1 - p0) ** 2 * -math.log(p0)
    # class 1: p = sigmoid(-1) = 0.268941, target 0 -> p_t = 1 - p
    p1 = 1 / (1 + math.exp(1.0))
    l1 = p1 ** 2 * -math.log(1 - p1)
    assert abs(float(FocalLoss(gamma=2.0)(logits, targets)) - (l0 + l1)) < 1e-6
    # alpha weights positives by alpha and negatives by 1 - alpha
    alpha = torch.tensor([0.25, 0.25])
    expected = 0.25 * l0 + 0.75 * l1
    assert abs(float(FocalLoss(2.0, alpha)(logits, targets)) - expected) < 1e-6


def test_focal_with_gamma_zero_is_bce():
    logits = torch.randn(5, 28)
    targets = (torch.rand(5, 28) > 0.8).float()
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, targets), BCELoss()(logits, targets))


def test_focal_down_weights_easy_examples():
    easy = FocalLoss()(torch.tensor([[6.0]]), torch.tensor([[1.0]]))
    hard = FocalLoss()(torch.tensor([[-2.0]]), torch.tensor([[1.0]]))
    assert float(hard) > 1000 * float(easy)

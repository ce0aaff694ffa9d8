"""Multilabel losses on logits."""

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) for multilabel logits.

    FL = -alpha_t * (1 - p_t)^gamma * log(p_t), with p_t the probability of the true value and
    alpha_t = alpha for positives, 1 - alpha for negatives (alpha per class, optional).
    Summed over classes, averaged over the batch.
    """

    def __init__(self, gamma=2.0, alpha=None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits, targets):
        logits, targets = logits.float(), targets.float()
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = torch.exp(-bce)
        loss = (1.0 - p_t) ** self.gamma * bce
        if self.alpha is not None:
            loss = loss * (self.alpha * targets + (1.0 - self.alpha) * (1.0 - targets))
        return loss.sum(dim=1).mean()


class BCELoss(nn.Module):
    """Plain binary cross-entropy, with the same reduction as FocalLoss for comparable figures."""

    def forward(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").sum(1).mean()


def build_loss(name, gamma=2.0, alpha=None):
    losses = {"focal": lambda: FocalLoss(gamma, alpha), "bce": BCELoss}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; valid: {sorted(losses)}")
    return losses[name]()

"""CLIP's contrastive loss (Radford et al. 2021, Figure 3), with the similarity matrix sharded by rank.

For a batch of N image-text pairs, logits = exp(t) * image_features @ text_features.T (N x N, the
pairs on the diagonal) and the loss is the mean of the cross-entropy over rows (image -> text) and
over columns (text -> image).

Across W ranks, each holding a local batch of n = N / W pairs, the features of every rank are
all-gathered WITH gradients; with `local_loss` each rank computes only its own n rows against all N
columns (n x N, and the same for text -> image), so the labels of rank r are r * n + arange(n). The
mean of the ranks' losses is the single-process loss on the global batch, and after DDP averages the
gradients they are the single-process gradients: the gather's backward sums each rank's
contribution back to the rank whose features they were (tests/trainer/test_loss.py checks both with two
gloo processes). `local_loss=False` computes the full N x N matrix on every rank (same result, W
times the work). `gather_with_grad=False` gathers without gradients, so a rank's loss only reaches
its own features: cheaper, and not the exact gradient.

    loss_fn = ClipLoss(rank=rank, world_size=world_size)
    image_features, text_features, logit_scale = model(images, tokens)
    loss = loss_fn(image_features, text_features, logit_scale)
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn
import torch.nn.functional as F


def gather_features(features: torch.Tensor, rank: int, world_size: int, with_grad: bool = True) -> torch.Tensor:
    """Every rank's (n, D) features -> (world_size * n, D), rank order. Every rank needs the same n."""
    if with_grad:
        return torch.cat(dist_fn.all_gather(features), dim=0)
    gathered = [torch.zeros_like(features) for _ in range(world_size)]
    dist.all_gather(gathered, features)
    gathered[rank] = features  # the local slice keeps its graph
    return torch.cat(gathered, dim=0)


class ClipLoss(nn.Module):
    def __init__(self, rank: int = 0, world_size: int = 1, local_loss: bool = True, gather_with_grad: bool = True):
        super().__init__()
        self.rank, self.world_size = rank, world_size
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor):
        """-> (logits_per_image, logits_per_text): this rank's rows of the N x N matrix and its transpose."""
        if self.world_size == 1:
            logits_per_image = logit_scale * image_features @ text_features.T
            return logits_per_image, logits_per_image.T
        all_image = gather_features(image_features, self.rank, self.world_size, self.gather_with_grad)
        all_text = gather_features(text_features, self.rank, self.world_size, self.gather_with_grad)
        if self.local_loss:
            return logit_scale * image_features @ all_text.T, logit_scale * text_features @ all_image.T
        logits_per_image = logit_scale * all_image @ all_text.T
        return logits_per_image, logits_per_image.T

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        logits_per_image, logits_per_text = self.logits(image_features, text_features, logit_scale)
        rows = logits_per_image.shape[0]
        # the matching text of row i is column i, offset by the rows of the ranks before this one
        offset = self.rank * rows if self.world_size > 1 and self.local_loss else 0
        labels = torch.arange(rows, device=logits_per_image.device) + offset
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2

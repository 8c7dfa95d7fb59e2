"""The learning-rate schedule: linear warmup, then cosine decay to `min_lr` (CLIP §2.5, OpenCLIP).

    lr_at(0, 5e-4, warmup=2000, total=100_000)      # 5e-4 / 2000: the first step already learns
    lr_at(1999, 5e-4, 2000, 100_000)                # 5e-4: warmup ends
    lr_at(51_000, 5e-4, 2000, 100_000)              # 2.5e-4: halfway through the decay
    lr_at(100_000, 5e-4, 2000, 100_000)             # 0.0 (= min_lr) from the end on

A pure function of the step, so a resumed run needs nothing but the step to continue it.
"""
from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total`.

    Warmup: steps 0..warmup-1 rise linearly to base_lr, step s getting base_lr * (s + 1) / warmup.
    Decay: from step `warmup` (base_lr) a half cosine reaches min_lr at step `total`, and stays.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup:
        return base_lr * (step + 1) / warmup
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))

import math

import pytest

from clipdata.trainer.schedule import lr_at


def test_warmup_is_linear_from_the_first_step():
    assert lr_at(0, 1e-3, warmup=10, total=100) == pytest.approx(1e-4)
    assert lr_at(4, 1e-3, warmup=10, total=100) == pytest.approx(5e-4)
    assert lr_at(9, 1e-3, warmup=10, total=100) == pytest.approx(1e-3)  # warmup's last step


def test_cosine_from_warmup_end_to_min_lr():
    assert lr_at(10, 1e-3, warmup=10, total=100) == pytest.approx(1e-3)  # decay starts at the peak
    assert lr_at(55, 1e-3, warmup=10, total=100) == pytest.approx(5e-4)  # halfway: cos(pi/2) = 0
    quarter = 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi / 4))
    assert lr_at(32.5, 1e-3, 10, 100, min_lr=1e-4) == pytest.approx(quarter)
    assert lr_at(100, 1e-3, warmup=10, total=100) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(100, 1e-3, warmup=10, total=100, min_lr=1e-5) == pytest.approx(1e-5)
    assert lr_at(500, 1e-3, warmup=10, total=100, min_lr=1e-5) == pytest.approx(1e-5)  # stays


def test_decreasing_after_warmup_and_no_warmup():
    lrs = [lr_at(s, 1.0, 5, 50) for s in range(5, 51)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(0, 2.0, warmup=0, total=10) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        lr_at(-1, 1.0, 1, 10)

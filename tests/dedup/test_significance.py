"""CLIP's All / Clean / Overlap accuracy and its one-sided binomial test, against hand-computed cases."""
import math

import pytest

from clipdata.dedup import significance


def test_hand_computed_case():
    # Clean: 80 of 100 right; Overlap: 9 of 10 right.
    predictions = {f"c{i}": i < 80 for i in range(100)}
    predictions.update({f"o{i}": i < 9 for i in range(10)})
    result = significance.split_accuracy(predictions, overlap_ids={f"o{i}" for i in range(10)})
    assert (result.n_all, result.n_clean, result.n_overlap) == (110, 100, 10)
    assert (result.correct_all, result.correct_clean, result.correct_overlap) == (89, 80, 9)
    assert result.accuracy_clean == 0.8 and result.accuracy_overlap == 0.9
    assert result.accuracy_all == pytest.approx(89 / 110)
    assert result.delta == pytest.approx(89 / 110 - 0.8)
    assert result.overlap_minus_clean == pytest.approx(0.1)
    # P(X >= 9), X ~ Binomial(10, 0.8) = 10 * 0.8^9 * 0.2 + 0.8^10
    assert result.p_value == pytest.approx(10 * 0.8**9 * 0.2 + 0.8**10, rel=1e-9)
    assert result.p_value == pytest.approx(0.3758096384, rel=1e-9)


def test_every_overlap_example_right_is_clean_accuracy_to_the_n():
    predictions = {f"c{i}": i % 2 == 0 for i in range(40)}
    predictions.update({f"o{i}": True for i in range(6)})
    result = significance.split_accuracy(predictions, {f"o{i}" for i in range(6)})
    assert result.p_value == pytest.approx(0.5**6)


def test_no_overlap_means_no_test_and_ids_are_reconciled():
    predictions = {"a": True, "b": False, "stray": True}
    result = significance.split_accuracy(predictions, overlap_ids=set(), test_ids=["a", "b", "c"])
    assert result.n_overlap == 0 and result.p_value is None and result.accuracy_overlap is None
    assert result.delta == 0.0 and result.accuracy_all == 0.5
    assert result.missing == ["c"] and result.unknown == ["stray"]


def test_predictions_file_parsing(tmp_path):
    path = tmp_path / "preds.csv"
    path.write_text("id,correct,extra\n001,1,x\n002,false,y\n003, TRUE ,z\n")
    assert significance.read_predictions(str(path)) == {"001": True, "002": False, "003": True}
    path.write_text("id,correct\n001,maybe\n")
    with pytest.raises(significance.PredictionsError, match=r"preds.csv:2: correct must be"):
        significance.read_predictions(str(path))
    path.write_text("name,ok\n001,1\n")
    with pytest.raises(significance.PredictionsError, match="needs a header"):
        significance.read_predictions(str(path))
    path.write_text("id,correct\n001,1\n001,0\n")
    with pytest.raises(significance.PredictionsError, match="twice"):
        significance.read_predictions(str(path))


def test_describe_and_caveats():
    result = significance.split_accuracy({"a": True, "b": True, "c": False}, {"a"})
    line = significance.describe(result)
    assert "Clean 50.0%" in line and "Overlap 100.0% (n=1)" in line and "p=0.5" in line
    assert len(significance.CAVEATS) >= 3
    assert not math.isnan(result.delta)

"""All / Clean / Overlap accuracy of a test set and CLIP's binomial significance test (CLIP §5).

Given per-example results of a model on a test set (`id,correct` CSV; correct is 0/1/true/false)
and the ids the overlap analysis put in Overlap, CLIP reports:

    All      accuracy on the whole test set
    Clean    accuracy on the examples with no near duplicate in the training data
    Overlap  accuracy on the examples with one
    All - Clean   how much the reported number is inflated by contamination (CLIP's "Δ")

and a one-sided binomial test: the probability of at least the observed number of correct Overlap
examples if each were correct with the Clean accuracy. A small p-value says the model does better
on the overlapping examples than on the clean ones by more than chance.

    preds = read_predictions("cifar10_preds.csv")
    result = split_accuracy(preds, overlap_ids={"000123", ...}, test_ids=all_ids)
    result.p_value, result.delta
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

TRUE = {"1", "true", "t", "yes", "y"}
FALSE = {"0", "false", "f", "no", "n"}

# CLIP §5's own caveats, shown beside every number this module computes.
CAVEATS = (
    "Overlap and Clean are not random splits: duplicated images may be easier or harder than the "
    "rest (e.g. stock photos, popular images), so a difference is not caused by the overlap alone.",
    "The duplicate detector has false positives and false negatives; its errors move examples "
    "between Overlap and Clean.",
    "With few Overlap examples the Overlap accuracy is noisy and the test has little power: a "
    "large p-value is not evidence that contamination does not matter.",
    "The test compares Overlap against the Clean accuracy treated as exact; it ignores the "
    "uncertainty of the Clean accuracy itself.",
)


class PredictionsError(Exception):
    """A predictions file that cannot be read as id,correct rows; the message says where."""


@dataclass
class SplitAccuracy:
    """CLIP's All / Clean / Overlap numbers for one test set (accuracies in [0, 1], None if empty)."""

    n_all: int
    n_clean: int
    n_overlap: int
    correct_all: int
    correct_clean: int
    correct_overlap: int
    accuracy_all: float | None
    accuracy_clean: float | None
    accuracy_overlap: float | None
    delta: float | None            # All - Clean: the inflation of the reported number
    overlap_minus_clean: float | None
    p_value: float | None          # P(X >= correct_overlap), X ~ Binomial(n_overlap, accuracy_clean)
    missing: list[str] = field(default_factory=list)   # test ids without a prediction
    unknown: list[str] = field(default_factory=list)   # predicted ids that are not in the test set

    def to_dict(self) -> dict:
        out = asdict(self)
        out["missing_count"], out["unknown_count"] = len(self.missing), len(self.unknown)
        out["missing"], out["unknown"] = self.missing[:100], self.unknown[:100]  # names, capped
        return out


def parse_correct(value: str) -> bool:
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"correct must be one of 0, 1, true, false; got {value!r}")


def read_predictions(path: str, id_col: str = "id", correct_col: str = "correct") -> dict[str, bool]:
    """`id,correct` rows (a header naming the two columns; any others are ignored) -> {id: correct}."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8-sig")
    except (OSError, IOError) as err:
        raise PredictionsError(f"{path}: cannot read ({err})") from err
    except UnicodeDecodeError as err:
        raise PredictionsError(f"{path}: not UTF-8 text ({err})") from err
    return parse_predictions(text, path, id_col, correct_col)


def parse_predictions(text: str, name: str = "<predictions>", id_col: str = "id",
                      correct_col: str = "correct") -> dict[str, bool]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or id_col not in reader.fieldnames or correct_col not in reader.fieldnames:
        raise PredictionsError(f"{name}: needs a header with columns {id_col!r} and {correct_col!r}, "
                               f"got {reader.fieldnames}")
    predictions: dict[str, bool] = {}
    for line, row in enumerate(reader, start=2):
        example = (row.get(id_col) or "").strip()
        if not example:
            raise PredictionsError(f"{name}:{line}: empty id")
        try:
            correct = parse_correct(row.get(correct_col) or "")
        except ValueError as err:
            raise PredictionsError(f"{name}:{line}: {err}") from err
        if example in predictions and predictions[example] != correct:
            raise PredictionsError(f"{name}:{line}: id {example!r} appears twice with different results")
        predictions[example] = correct
    return predictions


def binomial_p_value(correct_overlap: int, n_overlap: int, accuracy_clean: float) -> float:
    """One-sided: P(X >= correct_overlap) for X ~ Binomial(n_overlap, accuracy_clean)."""
    from scipy.stats import binomtest

    return float(binomtest(correct_overlap, n_overlap, accuracy_clean, alternative="greater").pvalue)


def split_accuracy(predictions: dict[str, bool], overlap_ids, test_ids=None) -> SplitAccuracy:
    """All / Clean / Overlap accuracy over the test ids that have a prediction.

    `test_ids`: every id of the test set (default: the predicted ids); ids without a prediction are
    left out of every split and listed in `missing`, predicted ids outside the test set in `unknown`.
    """
    overlap_ids = set(overlap_ids)
    if test_ids is None:
        test_ids = list(predictions)
    test_ids = list(dict.fromkeys(test_ids))
    known = set(test_ids)
    missing = [i for i in test_ids if i not in predictions]
    unknown = sorted(i for i in predictions if i not in known)
    scored = [i for i in test_ids if i in predictions]

    overlap = [i for i in scored if i in overlap_ids]
    clean = [i for i in scored if i not in overlap_ids]
    c_all = sum(predictions[i] for i in scored)
    c_overlap = sum(predictions[i] for i in overlap)
    c_clean = c_all - c_overlap

    def ratio(correct: int, n: int) -> float | None:
        return correct / n if n else None

    acc_all, acc_clean, acc_overlap = ratio(c_all, len(scored)), ratio(c_clean, len(clean)), \
        ratio(c_overlap, len(overlap))
    p_value = None
    if overlap and acc_clean is not None:
        p_value = binomial_p_value(c_overlap, len(overlap), acc_clean)
    return SplitAccuracy(
        n_all=len(scored), n_clean=len(clean), n_overlap=len(overlap),
        correct_all=c_all, correct_clean=c_clean, correct_overlap=c_overlap,
        accuracy_all=acc_all, accuracy_clean=acc_clean, accuracy_overlap=acc_overlap,
        delta=None if acc_all is None or acc_clean is None else acc_all - acc_clean,
        overlap_minus_clean=None if acc_overlap is None or acc_clean is None else acc_overlap - acc_clean,
        p_value=p_value, missing=missing, unknown=unknown,
    )


def describe(result: SplitAccuracy) -> str:
    """One line for summaries: 'All 91.2% Clean 91.0% Overlap 97.5% (n=40) Δ +0.2 pts, p=0.031'."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    delta = "n/a" if result.delta is None else f"{100 * result.delta:+.2f} pts"
    p = "n/a" if result.p_value is None else f"{result.p_value:.3g}"
    return (f"All {pct(result.accuracy_all)}  Clean {pct(result.accuracy_clean)}  "
            f"Overlap {pct(result.accuracy_overlap)} (n={result.n_overlap})  All-Clean {delta}  p={p}")

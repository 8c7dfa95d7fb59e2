"""trainer/zeroshot.py: prompt-averaged classifiers, top-1/top-5 on folders and shards, the CSV."""
import csv
import io
import json
import os
import random
import tarfile

import pytest
import torch

from clipdata.dedup.significance import read_predictions
from clipdata.pipeline import cli as main_cli
from clipdata.pipeline.demo import synthetic_web as sw
from clipdata.pipeline.demo.synthetic_web import drawing as sw_drawing
from clipdata.trainer import checkpoint, model as clip_model, zeroshot
from clipdata.trainer.tokenizer import Tokenizer

MICRO = {"embed_dim": 32,
         "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
         "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
SHAPES, COLOURS = ("circle", "square"), ("red", "blue")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("zeroshot")
    test_set = sw.build_test_set(str(root / "test"), 12, seed=3, shapes=SHAPES, colours=COLOURS)
    (root / "test" / "red_circle" / "broken.png").write_bytes(b"\x89PNG not really")
    texts = [f"{t.format(sw_drawing.class_text(s, c))}" for s in SHAPES for c in COLOURS
             for t in zeroshot.TEMPLATES]
    tokenizer = Tokenizer.train(texts, vocab_size=600, min_frequency=2)
    torch.manual_seed(0)
    model = clip_model.build_model(clip_model.with_tokenizer(MICRO, tokenizer))
    return root, test_set, tokenizer, model


def test_classifier_rows_are_normalised_prompt_means(parts):
    _, _, tokenizer, model = parts
    weights = zeroshot.classifier_weights(model, tokenizer, ["red circle", "blue square"])
    assert weights.shape == (2, 32)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(2))
    one = zeroshot.classifier_weights(model, tokenizer, ["red circle"], templates=("a photo of a {}.",))
    tokens = tokenizer(["a photo of a red circle."], context_length=16)
    torch.testing.assert_close(one, model.encode_text(tokens).detach())


def test_folder_accuracy_and_predictions_csv(parts, tmp_path):
    root, test_set, tokenizer, model = parts
    out = tmp_path / "preds.csv"
    result = zeroshot.evaluate(model, tokenizer, str(root / "test"), predictions_csv=str(out))
    assert result["n"] == 12 and result["unreadable"] == 1 and result["classes"] == 4
    assert 0.0 <= result["top1"] <= result["top5"] == 1.0  # 4 classes: top-5 holds them all
    rows = list(csv.DictReader(open(out)))
    # ids are the contamination check's: the path relative to the folder
    assert sorted(r["id"] for r in rows) == sorted(e["path"] for e in test_set["images"])
    assert sum(int(r["correct"]) for r in rows) == round(result["top1"] * 12)
    assert all(r["correct"] == str(int(r["label"] == r["predicted"])) for r in rows)
    assert set(read_predictions(str(out))) == {e["path"] for e in test_set["images"]}
    assert model.training  # evaluate restores the mode it found


def test_labelled_shards_with_class_names(parts, tmp_path):
    _, _, tokenizer, model = parts
    rng = random.Random(0)
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i in range(6):
            label = i % 2
            spec = sw.make_spec(SHAPES[label], "red", rng, 48, 48)
            for ext, payload in (("png", sw_drawing.encode(sw.draw_image(spec), "png")),
                                 ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    names = tmp_path / "classes.json"
    names.write_text(json.dumps(["red circle", "red square", "blue star"]))
    result = zeroshot.evaluate(model, tokenizer, str(tmp_path / "00000.tar"),
                               classnames=str(names), predictions_csv=str(tmp_path / "p.csv"))
    assert result["n"] == 6 and result["classes"] == 3
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["id"] for r in rows] == [f"{i:09d}" for i in range(6)]
    assert [r["label"] for r in rows] == ["0", "1"] * 3   # the .cls numbers, as the shards give them
    assert all(r["correct"] == str(int(r["label"] == r["predicted"])) for r in rows)
    assert result["top1"] == pytest.approx(sum(int(r["correct"]) for r in rows) / 6)
    with pytest.raises(zeroshot.EvalError, match="labels are numbers"):
        zeroshot.evaluate(model, tokenizer, str(tmp_path / "00000.tar"))


def test_train_eval_command_on_a_checkpoint(parts, tmp_path, capsys):
    root, _, tokenizer, model = parts
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    checkpoint.save_checkpoint(str(tmp_path / "run" / "checkpoints"), 7, {
        "step": 7, "model_config": model.config, "model": model.state_dict(),
        "tokenizer": {"source": "learned", "json": (tmp_path / "tokenizer.json").read_text()}})
    code = main_cli.main(["train", "eval", "--checkpoint", str(tmp_path / "run"),
                          "--data", str(root / "test"), "--workers", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "step 7: zero-shot top-1" in printed and "1 unreadable" in printed
    assert os.path.exists(tmp_path / "run" / "eval" / "step_00000007_test_predictions.csv")
    # a newer checkpoint cut short: a run folder gives its newest one that loads, and says so
    (tmp_path / "run" / "checkpoints" / "step_00000009.pt").write_bytes(
        (tmp_path / "run" / "checkpoints" / "step_00000007.pt").read_bytes()[:1000])
    assert main_cli.main(["train", "eval", "--checkpoint", str(tmp_path / "run"),
                          "--data", str(root / "test"), "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert "step 7: zero-shot top-1" in captured.out
    assert "skipping checkpoint" in captured.err and "step_00000009.pt: not a readable checkpoint" in captured.err
    assert main_cli.main(["train", "eval", "--checkpoint", str(tmp_path / "none.pt"),
                          "--data", str(root / "test")]) == 2
    (tmp_path / "empty_run").mkdir()
    assert main_cli.main(["train", "eval", "--checkpoint", str(tmp_path / "empty_run"),
                          "--data", str(root / "test")]) == 2
    assert "no checkpoint in" in capsys.readouterr().err

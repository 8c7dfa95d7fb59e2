"""Zero-shot classification (CLIP §3.1.2): class names in prompt templates -> a text classifier.

Each class's text features are the mean over the prompt templates ("a photo of a {}.", ...) of the
normalised text embeddings, normalised again: one row per class. An image is assigned the class
whose row has the highest cosine similarity with its image embedding.

    clipdata train eval --checkpoint run/checkpoints/step_00001000.pt --data test_set/

Eval sets are read by the same lister as the contamination check (`clipdata.pipeline.foundation.eval_sets`), so
example ids agree between the two: a labelled image folder (class-per-subfolder; id = the path
relative to the folder, 'red_circle/000017.png'; a `classes.json` beside them maps folder name ->
class text, as `synthetic_web.build_test_set` writes) or labelled shards (id = the sample key,
label from a `cls` member or the json's `label`/`cls`/`class`). Class texts: `classnames` (a JSON
list indexed by label, a JSON object label -> text, or one text per line), else classes.json, else
the label with '_' read as a space.

The per-example predictions CSV (`id,correct,label,predicted`) is what `clipdata dedup` reads to
report All / Clean / Overlap accuracy. Images that do not decode are counted (`unreadable`) and
left out of the accuracy and the CSV.
"""
from __future__ import annotations

import csv
import io
import json
import os

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from clipdata.pipeline.foundation.storage import atomic_write
from clipdata.trainer import data

# CLIP's ImageNet prompts, the few that fit any object category.
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a drawing of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a rendering of a {}.",
    "a cropped photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "art of the {}.",
)


class EvalError(Exception):
    """An eval set that cannot be used: no labelled images, or labels without class texts."""


@torch.no_grad()
def classifier_weights(model, tokenizer, classnames: list[str], templates=TEMPLATES,
                       device="cpu") -> torch.Tensor:
    """[classes, embed_dim]: per class, the normalised mean of its normalised prompt embeddings."""
    context_length = model.config["text_cfg"]["context_length"]
    prompts = [t.format(name) for name in classnames for t in templates]
    features = []
    for start in range(0, len(prompts), 1024):
        tokens = tokenizer(prompts[start:start + 1024], context_length=context_length)
        features.append(model.encode_text(tokens.to(device)).float())
    per_prompt = torch.cat(features).view(len(classnames), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


def read_classnames(path: str) -> dict[str, str]:
    """label -> class text from a JSON list (label = index), a JSON object, or lines."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        loaded = json.loads(text)
    except ValueError:
        loaded = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(loaded, list):
        return {str(i): str(name) for i, name in enumerate(loaded)}
    if isinstance(loaded, dict):
        return {str(k): str(v) for k, v in loaded.items()}
    raise EvalError(f"{path}: class names must be a JSON list or object, or one per line")


def load_eval_set(path: str, classnames: str | None = None):
    """-> (labelled TestImages, class labels in class order, class texts in the same order)."""
    from clipdata.pipeline.foundation.eval_sets import TestSetError, load_test_set

    try:
        test_set = load_test_set("eval", path)
    except TestSetError as err:
        raise EvalError(str(err)) from err
    images = [im for im in test_set.images if im.label is not None]
    if not images:
        raise EvalError(f"{path}: no labelled images (class-per-subfolder folders, or shards with "
                        "a cls member or a json label)")
    texts = read_classnames(classnames) if classnames else (test_set.classes or {})
    labels = set(im.label for im in images) | set(texts)  # a class without images still competes
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    labels = sorted(labels, key=int if numeric else str)
    if numeric and not texts:
        raise EvalError(f"{path}: labels are numbers; give the class names (--classnames)")
    return images, labels, [texts.get(label, label.replace("_", " ")) for label in labels]


class _Images(Dataset):
    def __init__(self, images, image_size: int):
        self.images, self.image_size = images, image_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            image = data.load_rgb(self.images[i].read(), self.image_size)
            return data.square_crop(image, self.image_size, None), i, True
        except Exception:  # noqa: BLE001 - an undecodable test image is counted, not fatal
            size = self.image_size
            return torch.zeros(3, size, size, dtype=torch.uint8), i, False


@torch.no_grad()
def evaluate(model, tokenizer, path: str, device="cpu", classnames: str | None = None,
             templates=TEMPLATES, batch_size: int = 256, workers: int = 0,
             predictions_csv: str | None = None) -> dict:
    """Top-1 / top-5 zero-shot accuracy on a labelled eval set; writes `id,correct,label,predicted`
    rows to `predictions_csv` if given. Returns {"top1", "top5", "n", "unreadable", "classes"}
    (top5 is top-k with k = min(5, classes))."""
    images, labels, texts = load_eval_set(path, classnames)
    label_index = {label: i for i, label in enumerate(labels)}
    was_training = model.training
    model.eval()
    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    try:
        with autocast:
            weights = classifier_weights(model, tokenizer, texts, templates, device)
        k = min(5, len(labels))
        loader = DataLoader(_Images(images, model.config["vision_cfg"]["image_size"]),
                            batch_size=batch_size, num_workers=workers)
        rows, top1, top5, unreadable = [], 0, 0, 0
        for pixels, index, ok in loader:
            with autocast:
                features = model.encode_image(data.normalize(pixels.to(device)))
            ranked = (features.float() @ weights.T).topk(k, dim=-1).indices.cpu()
            for i, good, top in zip(index.tolist(), ok.tolist(), ranked.tolist()):
                if not good:
                    unreadable += 1
                    continue
                truth = label_index[images[i].label]
                top1 += top[0] == truth
                top5 += truth in top
                rows.append((images[i].id, int(top[0] == truth), images[i].label, labels[top[0]]))
    finally:
        model.train(was_training)
    n = len(rows)
    if predictions_csv:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["id", "correct", "label", "predicted"])
        writer.writerows(rows)
        atomic_write(predictions_csv, text.getvalue().encode("utf-8"))
    return {"top1": top1 / n if n else 0.0, "top5": top5 / n if n else 0.0, "n": n,
            "unreadable": unreadable, "classes": len(labels)}


def evaluate_checkpoint(checkpoint_path: str, path: str, device="cpu", **kwargs) -> dict:
    """`evaluate` with the model and tokenizer a training checkpoint holds."""
    import tempfile

    from clipdata.trainer import checkpoint, model as clip_model
    from clipdata.trainer.tokenizer import Tokenizer

    state = checkpoint.load_checkpoint(checkpoint_path)
    model = clip_model.model_from_checkpoint(state).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_file = os.path.join(tmp, "tokenizer.json")
        with open(tokenizer_file, "w", encoding="utf-8") as f:
            f.write(state["tokenizer"]["json"])
        tokenizer = Tokenizer.load(tokenizer_file)
    result = evaluate(model, tokenizer, path, device=device, **kwargs)
    return {"step": state["step"], **result}

"""trainer/train.py: a tiny CLIP learns from generated shards; exact resume; NaN stops; 2-process DDP."""
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch

from clipdata.pipeline import cli as main_cli
from clipdata.pipeline.demo import synthetic_web as sw
from clipdata.pipeline.demo.synthetic_web import drawing as sw_drawing
from clipdata.pipeline.foundation.imaging import to_rgb
from clipdata.pipeline.foundation.shards import ShardRow, sample_key, write_manifest, write_shard
from clipdata.trainer import checkpoint, train
from clipdata.trainer.loss import ClipLoss

CLASSES = sw.make_classes(("circle", "square", "star"), ("red", "blue", "green"))
# Smaller than tiny-vit, so a CPU step takes tens of milliseconds.
MICRO = {"embed_dim": 32,
         "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
         "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def make_shards(folder, n_shards=4, per_shard=32):
    for shard in range(n_shards):
        rows = []
        for i in range(per_shard):
            rng = random.Random(f"{shard}:{i}")
            shape, colour = rng.choice(CLASSES)
            spec = sw.make_spec(shape, colour, rng, rng.randint(40, 80), rng.randint(40, 80))
            rows.append(ShardRow(key=sample_key(shard, i), url="http://x", status="success",
                                 caption=f"a photo of a {colour} {shape}",
                                 image=sw_drawing.encode(to_rgb(sw.draw_image(spec)), "jpeg")))
        write_shard(str(folder), shard, rows)
    write_manifest(str(folder))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_shards(root / "shards")
    (root / "micro.json").write_text(json.dumps(MICRO))
    sw.build_test_set(str(root / "test"), 18, seed=1, shapes=("circle", "square", "star"),
                      colours=("red", "blue", "green"))
    return root


def config(setup, output, **overrides):
    settings = dict(data=str(setup / "shards"), output=str(output), model=str(setup / "micro.json"),
                    batch_size=16, steps=6, lr=2e-3, warmup=2, workers=0, precision="fp32",
                    log_every=2, ckpt_every=3, keep_checkpoints=0, shuffle_buffer=16,
                    shards_per_group=2, seed=0)
    settings.update(overrides)
    return train.TrainConfig(**settings)


def read_log(output):
    with open(os.path.join(output, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_tiny_model_learns_logs_and_evaluates(setup, tmp_path):
    out = tmp_path / "run"
    assert train.train(config(setup, out, steps=40, log_every=5, ckpt_every=40,
                              eval_data=str(setup / "test"))) == 0
    log = read_log(out)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.3, losses  # from about ln(16) = 2.77
    last = [r for r in log if "loss" in r][-1]
    assert last["step"] == 40 and last["samples"] == 640 and last["epoch"] == pytest.approx(5.0)
    assert last["samples_per_s"] > 0 and last["skips"] == {} and 0 < last["logit_scale"] <= 100
    assert last["lr"] < 2e-3 and last["mfu"] is None  # no GPU: no MFU
    evals = [r for r in log if "zeroshot/top1" in r]
    assert evals and evals[-1]["zeroshot/n"] == 18
    with open(out / "eval" / "step_00000040_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    # the logged accuracy is the per-example file's: every image once, correct where label = predicted
    assert len(rows) == 18 and all(r["correct"] == str(int(r["label"] == r["predicted"])) for r in rows)
    assert evals[-1]["zeroshot/top1"] == pytest.approx(sum(int(r["correct"]) for r in rows) / 18)
    assert evals[-1]["zeroshot/top1"] <= evals[-1]["zeroshot/top5"]
    assert os.listdir(out / "tb")  # TensorBoard events
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    assert 0 < len(tokenizer["merges"]) < 1000  # learned from 128 captions: far below 49152
    state = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(out / "checkpoints"))
    assert state["config"]["steps"] == 40 and state["config"]["model"].endswith("micro.json")
    assert state["model_config"]["text_cfg"]["vocab_size"] == len(tokenizer["merges"]) + 514


def test_resume_n_steps_then_n_more_equals_2n_straight(setup, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train.train(config(setup, straight)) == 0
    # A run stopped after its step-3 checkpoint and restarted with the same command:
    os.makedirs(resumed / "checkpoints")
    shutil.copy(straight / "checkpoints" / "step_00000003.pt", resumed / "checkpoints")
    assert train.train(config(setup, resumed)) == 0
    a = checkpoint.load_checkpoint(straight / "checkpoints" / "step_00000006.pt")
    b = checkpoint.load_checkpoint(resumed / "checkpoints" / "step_00000006.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-6, atol=1e-7, msg=name)
    assert a["ranks"][0]["loader"] == b["ranks"][0]["loader"]
    # the log window of step 6 (steps 5-6) is the same in both runs
    assert read_log(resumed)[-1]["loss"] == pytest.approx(read_log(straight)[-1]["loss"], rel=1e-6)


def test_a_truncated_newest_checkpoint_is_passed_over_and_said(setup, tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train.train(config(setup, straight)) == 0
    # the run was killed while a disk filled: step 6 half written (not through save_checkpoint)
    os.makedirs(resumed / "checkpoints")
    shutil.copy(straight / "checkpoints" / "step_00000003.pt", resumed / "checkpoints")
    data = (straight / "checkpoints" / "step_00000006.pt").read_bytes()
    (resumed / "checkpoints" / "step_00000006.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert train.train(config(setup, resumed)) == 0
    out = capsys.readouterr().out
    assert "skipping checkpoint" in out and "step_00000006.pt: not a readable checkpoint" in out
    assert "resuming from" in out and "step_00000003.pt" in out
    a = checkpoint.load_checkpoint(straight / "checkpoints" / "step_00000006.pt")
    b = checkpoint.load_checkpoint(resumed / "checkpoints" / "step_00000006.pt")  # rewritten whole
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-6, atol=1e-7, msg=name)


def test_an_unloadable_checkpoint_is_a_usage_error_not_a_traceback(setup, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"these are not weights")
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load_checkpoint(junk)
    assert err.value.path == junk and "not a readable checkpoint" in err.value.problem
    torch.save({"format": "someone-else"}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a clipdata checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "other.pt")
    capsys.readouterr()
    for bad in (junk, tmp_path / "other.pt"):
        assert main_cli.main(["train", "--data", str(setup / "shards"), "--output", str(tmp_path / "run"),
                              "--model", str(setup / "micro.json"), "--resume", str(bad)]) == 2
        err_text = capsys.readouterr().err
        assert f"--resume {bad}: not a" in err_text and "Traceback" not in err_text
        assert main_cli.main(["train", "eval", "--checkpoint", str(bad), "--data", str(setup / "test")]) == 2
        err_text = capsys.readouterr().err
        assert f"--checkpoint {bad}: not a" in err_text and "Traceback" not in err_text


class NaNAfterThree(ClipLoss):
    calls = 0

    def forward(self, *args):
        loss = super().forward(*args)
        NaNAfterThree.calls += 1
        return loss * float("nan") if NaNAfterThree.calls > 3 else loss


def test_nan_loss_stops_clearly_and_keeps_the_last_good_checkpoint(setup, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr(train, "ClipLoss", NaNAfterThree)
    out = tmp_path / "nan"
    code = train.train(config(setup, out, steps=8, log_every=1, ckpt_every=2))
    assert code == train.EXIT_NONFINITE == 3
    err = capsys.readouterr().err
    assert "loss became non-finite (NaN or inf) at step 4" in err
    assert "step_00000002.pt" in err
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(out / "checkpoints")] == \
        ["step_00000002.pt"]
    assert [r["step"] for r in read_log(out)] == [1, 2, 3]  # nothing non-finite is logged


def test_cli_user_errors_exit_2(setup, tmp_path, capsys):
    assert main_cli.main(["train", "--output", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main_cli.main(["train", "--data", str(tmp_path / "nothing"), "--output",
                          str(tmp_path)]) == 2
    assert "no shard" in capsys.readouterr().err
    assert main_cli.main(["train", "--data", str(setup / "shards"), "--output", str(tmp_path),
                          "--model", "ViT-Z-99"]) == 2
    assert "unknown model config" in capsys.readouterr().err


def test_two_process_gloo_ddp_with_torchrun(setup, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "clipdata.trainer.train", "--data", str(setup / "shards"), "--output",
               str(out), "--model", str(setup / "micro.json"), "--steps", "4", "--batch-size", "8",
               "--workers", "0", "--precision", "fp32", "--log-every", "2", "--ckpt-every", "4",
               "--warmup", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "world size 2, global batch 16" in done.stdout
    state = checkpoint.load_checkpoint(out / "checkpoints" / "step_00000004.pt")
    assert state["world_size"] == 2
    # each rank read its own stream: rank 0 stream 0, rank 1 stream 1
    assert [list(r["loader"]["positions"]) for r in state["ranks"]] == [[0], [1]]
    assert [r["step"] for r in read_log(out)] == [2, 4]
    assert all(r["samples"] == 16 * r["step"] for r in read_log(out))


def test_the_final_line_says_what_was_skipped(setup, tmp_path, capsys):
    """Training on a truncated shard goes on with what precedes the cut, and the last line says
    what was left out, in words (it said nothing before)."""
    shards_dir = tmp_path / "shards"
    shutil.copytree(setup / "shards", shards_dir)
    tars = sorted(p for p in shards_dir.iterdir() if p.suffix == ".tar")
    with tarfile.open(tars[-1]) as tf:   # cut inside a member's data (a cut header reads as the end)
        member = tf.getmembers()[len(tf.getmembers()) // 2]
    blob = tars[-1].read_bytes()
    tars[-1].write_bytes(blob[: member.offset_data + member.size // 2])
    capsys.readouterr()
    assert train.train(config(setup, tmp_path / "run", data=str(tars[-1]))) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("done: 6 steps") and "skipped " in last and "truncated shard" in last, last


def test_online_balancing_leaves_out_head_samples_and_says_how_many(setup, tmp_path, capsys):
    """--online-balance with a curate run's counts: samples of the head entry are left out at
    t / count each time they are read; the run trains its steps and the last line counts them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards_dir = tmp_path / "shards"
    for shard in range(2):
        rows = []
        for i in range(32):
            rng = random.Random(f"{shard}:{i}")
            shape, colour = rng.choice(CLASSES)
            spec = sw.make_spec(shape, colour, rng, 48, 48)
            rows.append(ShardRow(key=sample_key(shard, i), url="http://x", status="success",
                                 caption=f"a photo of a {colour} {shape}", entry_ids=[0] if i % 4 else [1],
                                 image=sw_drawing.encode(to_rgb(sw.draw_image(spec)), "jpeg")))
        write_shard(str(shards_dir), shard, rows)
    write_manifest(str(shards_dir))
    curated = tmp_path / "curated"
    curated.mkdir()
    pq.write_table(pa.table({"entry_id": pa.array([0, 1], pa.int32()), "entry": ["photo", "rare"],
                             "matched": [48, 16], "kept": [48, 16]}), str(curated / "entry_counts.parquet"))
    capsys.readouterr()
    assert train.train(config(setup, tmp_path / "run", data=str(shards_dir), online_balance=str(curated),
                              online_t=16)) == 0
    out = capsys.readouterr().out
    assert "online balancing: t all 16 over 2 entries" in out
    last = out.strip().splitlines()[-1]
    left_out = int(last.split("online balancing left out ")[1].split(" ")[0].replace(",", ""))
    assert last.startswith("done: 6 steps") and left_out > 0, last

"""Benchmarks for `clipdata train`, on CPU.

    python bench/train.py                    # both parts; shards cached in bench_output/train_shards
    python bench/train.py --quick            # fewer batches and steps
    python bench/train.py --skip-openclip

(a) loader vs step: the data loader alone (`ShardLoader`, --workers processes, decoding, random
crop, tokenizing) in samples/s, beside the samples/s one training step consumes (forward, loss,
backward, AdamW, on an in-memory batch), for tiny-vit and ViT-B-32. The loader must outrun the step
by a margin (target ratio >= 2), or training waits on data. On one machine the two share the CPU
when training, so on CPU the ratio says what the loader could give, not what it gets.

(b) our trainer beside OpenCLIP's (`python -m open_clip_train.main`), same tiny ViT config (OpenCLIP
reads it with `--model local-dir:`), same shards, batch size, fp32, workers, resampled shards, and
the same tokenizer (CLIP's BPE, the merges file OpenCLIP ships, so both text towers have the 49408
token embedding): steady-state samples/s of each (first log window dropped; both count a step from
the end of the previous one, data wait included) and the ratio. OpenCLIP lives in its own venv:

    python3 -m venv bench_output/openclip-venv
    bench_output/openclip-venv/bin/pip install 'open_clip_torch==3.3.*' torch==2.13.0 \\
        'numpy<2.4' 'webdataset<=0.2.86' pandas braceexpand fsspec

If it cannot run, the table says why and still shows our figures. Results also go to
bench_output/train_bench.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

import torch

from clipdata.pipeline.demo import synthetic_web as sw
from clipdata.pipeline.demo.synthetic_web import captions as sw_captions, drawing as sw_drawing
from clipdata.pipeline.foundation.imaging import to_rgb
from clipdata.pipeline.foundation.shards import ShardRow, sample_key, write_manifest, write_shard
from clipdata.trainer import data, model as clip_model
from clipdata.trainer.loss import ClipLoss
from clipdata.trainer.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench_output")
OPENCLIP_VENV = os.path.join(OUT, "openclip-venv")


def make_shards(folder: str, n_shards: int, per_shard: int) -> list[str]:
    """Web-like shards: JPEGs of 200-400 px on a side (what a 256-384 px download gives), with
    coloured-shape captions. Cached: rebuilt only when the folder has no manifest."""
    if os.path.exists(os.path.join(folder, "manifest.json")):
        return data.resolve_shards(folder)
    classes = sw.make_classes()
    for shard in range(n_shards):
        rows = []
        for i in range(per_shard):
            rng = random.Random(f"bench:{shard}:{i}")
            shape, colour = rng.choice(classes)
            spec = sw.make_spec(shape, colour, rng, rng.randint(200, 400), rng.randint(200, 400),
                                distractor_classes=classes)
            caption = f"a photo of a {colour} {shape}, {rng.choice(sw_captions.FILLERS)} clip art"
            rows.append(ShardRow(key=sample_key(shard, i), url="http://bench", caption=caption,
                                 status="success", image=sw_drawing.encode(to_rgb(sw.draw_image(spec)), "jpeg")))
        write_shard(folder, shard, rows)
    write_manifest(folder)
    return data.resolve_shards(folder)


def clip_bpe_path() -> str | None:
    found = glob.glob(os.path.join(OPENCLIP_VENV, "lib", "python*", "site-packages", "open_clip",
                                   "bpe_simple_vocab_16e6.txt.gz"))
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------
# (a) the loader alone vs the step alone


def loader_rate(shards, tokenizer, image_size, batch_size, workers, batches) -> float:
    loader = data.ShardLoader(shards, batch_size=batch_size, image_size=image_size, seed=0,
                              num_workers=workers, tokenizer=tokenizer)
    stream = iter(loader)
    for _ in range(max(2, workers * 2)):  # workers started and past their first batches
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch_size / (time.perf_counter() - start)


def step_rate(config: dict, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = clip_model.build_model(config)
    optimizer = torch.optim.AdamW(clip_model.param_groups(model, 0.2), lr=1e-4)
    loss_fn = ClipLoss()
    size = config["vision_cfg"]["image_size"]
    images = torch.randn(batch_size, 3, size, size)
    tokens = torch.randint(1, config["text_cfg"]["vocab_size"] - 2, (batch_size, 77))
    tokens[:, 20] = config["text_cfg"]["vocab_size"] - 1
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        image_features, text_features, scale = model(images, tokens)
        loss = loss_fn(image_features, text_features, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def bench_loader_vs_step(shards, tokenizer, quick: bool, workers: int) -> list[dict]:
    rows = []
    for name, batch_size, steps in (("tiny-vit", 64, 3 if quick else 8), ("ViT-B-32", 8, 2 if quick else 4)):
        config = clip_model.with_tokenizer(clip_model.load_config(name), tokenizer)
        size = config["vision_cfg"]["image_size"]
        batches = 8 if quick else 30
        # best of two: other processes on a shared machine only ever slow a run down
        load = max(loader_rate(shards, tokenizer, size, batch_size, workers, batches)
                   for _ in range(2))
        step = max(step_rate(config, batch_size, steps) for _ in range(2))
        rows.append({"model": name, "image_size": size, "batch_size": batch_size,
                     "loader_workers": workers, "loader_samples_per_s": load,
                     "step_samples_per_s": step, "ratio": load / step})
        print(f"  {name}: loader {load:.1f} samples/s, step {step:.1f} samples/s", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# (b) our trainer vs OpenCLIP's


TINY_VIT = clip_model.load_config("tiny-vit")


def run_ours(shards_dir, bpe, batch_size, steps, workers, log_every, out) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "clipdata.trainer.train", "--data", shards_dir,
               "--output", out, "--model", "tiny-vit", "--batch-size", str(batch_size),
               "--steps", str(steps), "--workers", str(workers), "--precision", "fp32",
               "--log-every", str(log_every), "--ckpt-every", str(steps * 10), "--warmup", "10",
               "--lr", "5e-4", "--tokenizer", bpe]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr[-800:]}"}
    with open(os.path.join(out, "log.jsonl")) as f:
        windows = [json.loads(line) for line in f if '"samples_per_s"' in line]
    steady = windows[1:]  # the first window holds the start-up
    rate = len(steady) * log_every * batch_size / sum(log_every * batch_size / w["samples_per_s"]
                                                      for w in steady)
    return {"samples_per_s": rate, "wall_s": wall, "final_loss": windows[-1]["loss"]}


# torchvision 0.28.0 on PyPI is the CUDA build: its _C.so links libtorch_cuda.so and
# libc10_cuda.so, which torch 2.13.0+cpu does not have, so its ops never load; and 0.28's
# _meta_registrations registers fakes for torchvision::nms/qnms unconditionally, so `import
# torchvision` then fails ("operator torchvision::nms does not exist"). The CPU wheel (+cpu) is only
# on download.pytorch.org. Defining the two op schemas before torchvision loads lets its
# pure-Python transforms (all OpenCLIP's trainer uses) import; the detection ops are never called.
TORCHVISION_SHIM = """import torch
_lib = torch.library.Library("torchvision", "DEF")
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
"""
CHECK = "import open_clip, open_clip_train.main, torchvision, webdataset; " \
        "print(open_clip.__version__, torchvision.__version__)"


def openclip_env() -> tuple[dict | None, str]:
    """The environment OpenCLIP's trainer runs in, and a note on what it took (None: cannot run)."""
    python = os.path.join(OPENCLIP_VENV, "bin", "python")
    if not os.path.exists(python):
        return None, f"no OpenCLIP venv at {OPENCLIP_VENV} (see this file's docstring)"
    env = {**os.environ, "PYTHONPATH": ""}
    plain = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, env=env)
    if plain.returncode == 0:
        return env, plain.stdout.strip()
    shim = os.path.join(OUT, "torchvision-shim")
    os.makedirs(shim, exist_ok=True)
    with open(os.path.join(shim, "sitecustomize.py"), "w") as f:
        f.write(TORCHVISION_SHIM)
    env["PYTHONPATH"] = shim
    shimmed = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, env=env)
    if shimmed.returncode == 0:
        return env, (shimmed.stdout.strip() + "; torchvision's CUDA-only ops do not load with CPU "
                     "torch (" + plain.stderr.strip().splitlines()[-1] + "): ran with "
                     "torchvision::nms/qnms schemas defined by bench_output/torchvision-shim")
    return None, "OpenCLIP venv cannot import its trainer: " + shimmed.stderr.strip()[-400:]


def run_openclip(shards_dir, n_shards, batch_size, steps, workers, log_every, out) -> dict:
    env, note = openclip_env()
    if env is None:
        return {"error": note}
    python = os.path.join(OPENCLIP_VENV, "bin", "python")
    shutil.rmtree(out, ignore_errors=True)
    model_dir = os.path.join(out, "tiny-vit")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": TINY_VIT, "preprocess_cfg": {}}, f)
    command = [python, "-m", "open_clip_train.main", "--dataset-type", "webdataset",
               "--train-data", os.path.join(shards_dir, f"{{00000..{n_shards - 1:05d}}}.tar"),
               "--train-num-samples", str(steps * batch_size), "--dataset-resampled",
               "--model", f"local-dir:{model_dir}", "--batch-size", str(batch_size),
               "--epochs", "1", "--workers", str(workers), "--precision", "fp32",
               "--lr", "5e-4", "--warmup", "10", "--wd", "0.2", "--log-every-n-steps", str(log_every),
               "--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0",
               "--logs", out, "--name", "run", "--seed", "0"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=out, env=env)
    wall = time.perf_counter() - start
    text = done.stdout + done.stderr
    times = [float(t) for t in re.findall(r"Batch \(t\): ([0-9.]+)", text)]
    if done.returncode != 0 or len(times) < 3:
        return {"error": f"exit {done.returncode}: {text[-800:]}"}
    # "Batch (t)" is the mean step time of the window since the last log line; the first two
    # lines hold step 0 (start-up) and the rest of the first window.
    steady = times[2:]
    return {"samples_per_s": batch_size / (sum(steady) / len(steady)), "wall_s": wall,
            "note": note}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and steps")
    parser.add_argument("--skip-openclip", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="loader processes (default: 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="(b)'s batch size (default: 64)")
    parser.add_argument("--steps", type=int, default=0, help="(b)'s steps (default: 60, quick 30)")
    parser.add_argument("--repeats", type=int, default=2, help="(b)'s runs of each trainer, "
                        "alternating; the best counts (default: 2)")
    args = parser.parse_args()
    steps = args.steps or (30 if args.quick else 60)
    log_every = 10

    os.makedirs(OUT, exist_ok=True)
    n_shards, per_shard = 8, 250
    shards_dir = os.path.join(OUT, "train_shards")
    t0 = time.perf_counter()
    shards = make_shards(shards_dir, n_shards, per_shard)
    print(f"shards: {len(shards)} x {per_shard} samples in {shards_dir} "
          f"({time.perf_counter() - t0:.0f}s); {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    bpe = clip_bpe_path()
    if bpe:
        tokenizer = Tokenizer.from_clip_bpe(bpe)
    else:
        tokenizer = Tokenizer.train(data.iter_captions(shards, 2000), vocab_size=4096)

    print("(a) data loader alone vs one training step alone", flush=True)
    part_a = bench_loader_vs_step(shards, tokenizer, args.quick, args.workers)

    part_b = {"batch_size": args.batch_size, "steps": steps, "workers": args.workers,
              "precision": "fp32", "model": "tiny-vit"}
    print(f"(b) trainers side by side: tiny-vit, batch {args.batch_size}, {steps} steps, fp32, "
          f"{args.workers} workers", flush=True)
    # Alternating runs, best of each: load from other processes only ever slows a run down.
    runs: dict[str, list[dict]] = {"ours": [], "openclip": []}
    for _ in range(args.repeats):
        if bpe is None:
            runs["ours"].append({"error": "needs CLIP's BPE file from the OpenCLIP venv "
                                          "(the same tokenizer for both)"})
        else:
            runs["ours"].append(run_ours(shards_dir, bpe, args.batch_size, steps, args.workers,
                                         log_every, os.path.join(OUT, "train_bench_ours")))
        if args.skip_openclip:
            runs["openclip"].append({"error": "skipped (--skip-openclip)"})
        else:
            runs["openclip"].append(run_openclip(shards_dir, n_shards, args.batch_size, steps,
                                                 args.workers, log_every,
                                                 os.path.join(OUT, "train_bench_openclip")))
        for name, results in runs.items():
            r = results[-1]
            print(f"  {name}: " + (f"{r['samples_per_s']:.1f} samples/s" if "samples_per_s" in r
                                   else r["error"].splitlines()[-1][:200]), flush=True)
    for name, results in runs.items():
        good = [r for r in results if "samples_per_s" in r]
        part_b[name] = max(good, key=lambda r: r["samples_per_s"]) if good else results[-1]
        part_b[name]["all_samples_per_s"] = [r["samples_per_s"] for r in good]
    part_b["load_average"] = os.getloadavg()

    print(f"\nload average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs (other processes share this machine)")
    print(f"{'model':<10} {'img':>4} {'batch':>5} {'loader/s':>9} {'step/s':>8} {'ratio':>6}")
    for r in part_a:
        print(f"{r['model']:<10} {r['image_size']:>4} {r['batch_size']:>5} "
              f"{r['loader_samples_per_s']:>9.1f} {r['step_samples_per_s']:>8.1f} "
              f"{r['ratio']:>6.1f}{'' if r['ratio'] >= 2 else '  (< 2)'}")
    print()
    print(f"{'trainer':<10} {'samples/s':>10} {'wall s':>7}  runs")
    for name in ("ours", "openclip"):
        r = part_b[name]
        if "error" in r:
            print(f"{name:<10} {'-':>10} {'-':>7}  {r['error'].splitlines()[-1][:200]}")
        else:
            print(f"{name:<10} {r['samples_per_s']:>10.1f} {r['wall_s']:>7.0f}  "
                  + ", ".join(f"{x:.1f}" for x in r["all_samples_per_s"]))
    if part_b["openclip"].get("note"):
        print(f"OpenCLIP: {part_b['openclip']['note']}")
    if "samples_per_s" in part_b["ours"] and "samples_per_s" in part_b["openclip"]:
        part_b["ratio"] = part_b["ours"]["samples_per_s"] / part_b["openclip"]["samples_per_s"]
        print(f"ours / OpenCLIP: {part_b['ratio']:.2f}")
    with open(os.path.join(OUT, "train_bench.json"), "w") as f:
        json.dump({"loader_vs_step": part_a, "trainers": part_b}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`clipdata download` side by side with img2dataset, on one list of images served by nginx.

    .venv/bin/python bench/download.py                       # 5,000 images, 2 processes x 16
    .venv/bin/python bench/download.py --images 20000 --processes 2 --threads 32

Both tools get the same URL list (parquet: url, caption) of images the project generates (varied
sizes and formats, a few large), served by a real web server — nginx from Debian's packages
(installed with apt-get if missing and we are root) — on 127.0.0.1, the same resize settings
(256 px, keep_ratio, jpg quality 95) and the same process and thread counts. For each: images/s
over the whole command, and the peak memory of its whole process tree (sum of RSS, sampled every
50 ms), and the CPU time per image of its whole process tree. Also the rate of each one's
decode + resize + encode alone on the same images (img2dataset's Resizer, and resize.py), in the
same number of processes: on loopback the network is free, so that is the limit both run into.
"""
from __future__ import annotations

import argparse
import glob
import io
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_nginx() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if os.path.exists(path):
        return path
    if os.geteuid() != 0:
        sys.exit("nginx is not installed: `sudo apt-get install nginx` (Debian) and run again")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True, stdout=subprocess.DEVNULL)
    return "/usr/sbin/nginx"


class Nginx:
    """nginx serving `root` on 127.0.0.1:port, in the foreground of a child process."""

    def __init__(self, root: str, workdir: str, workers: int = 2):
        self.port = free_port()
        self.prefix = os.path.abspath(os.path.join(workdir, "nginx"))
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as out:
            out.write(f"""
worker_processes {workers};
daemon off;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{self.port};
        root {os.path.abspath(root)};
    }}
}}
""")
        self.command = [ensure_nginx(), "-c", conf, "-p", self.prefix]

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return f"http://127.0.0.1:{self.port}"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {self.process.stderr.read().decode()}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait()


def tree_rss_mb(pid: int) -> float:
    """Sum of the resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total / 1e6


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command: list[str], env=None) -> tuple[float, float, float, int]:
    """(seconds, CPU seconds, peak MB of the process tree, exit code) of a command. The CPU time is
    that of every process of the tree that was waited for (its workers included)."""
    cpu_before = children_cpu_seconds()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = 0.0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_mb(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    cpu = children_cpu_seconds() - cpu_before
    stop.set()
    sampler.join()
    if process.returncode:
        print(stderr.decode()[-3000:], file=sys.stderr)
    return seconds, cpu, peak, process.returncode


def count_samples(folder: str) -> int:
    n = 0
    for path in glob.glob(os.path.join(folder, "*.tar")):
        with tarfile.open(path) as tar:
            n += sum(1 for m in tar.getmembers() if m.name.endswith(".jpg"))
    return n


def _resize_all(paths: list[str], which: str) -> int:
    """How many of the images one resizer stores: img2dataset's own or ours (resize.py)."""
    if which == "img2dataset":
        from img2dataset.resizer import ResizeMode, Resizer

        theirs = Resizer(image_size=256, resize_mode=ResizeMode.keep_ratio, resize_only_if_bigger=False,
                         encode_quality=95, encode_format="jpg")

        def resize(body):
            return theirs(io.BytesIO(body))[5] is None
    else:
        from clipdata.pipeline.download.images import ImageConfig, make_resizer

        ours = make_resizer(ImageConfig(image_size=256, resize_mode="keep_ratio", encode_quality=95))

        def resize(body):
            return ours(body).error_kind is None
    ok = 0
    for path in paths:
        with open(path, "rb") as f:
            ok += resize(f.read())
    return ok


def resize_only(paths: list[str], processes: int, which: str) -> tuple[float, int]:
    chunks = [(paths[i::processes], which) for i in range(processes)]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        ok = sum(pool.starmap(_resize_all, chunks))
    return time.perf_counter() - start, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--workdir", default="bench_output/download")
    args = parser.parse_args(argv)

    from clipdata.pipeline.demo import synthetic_web

    bin_dir = os.path.dirname(sys.executable)
    web_dir = os.path.join(args.workdir, f"web-{args.images}")
    if not os.path.exists(os.path.join(web_dir, "web.json")):
        print(f"generating {args.images:,} images in {web_dir} ...", flush=True)
        synthetic_web.build_web(web_dir, args.images, seed=0, fault_fraction=0.0, workers=args.processes)
    web = synthetic_web.load_web(web_dir)
    images = [e for e in web["images"] if e.get("fault") is None and e.get("duplicate_of") is None]
    paths = [os.path.join(web_dir, e["path"]) for e in images]
    print(f"{len(images):,} images, {sum(os.path.getsize(p) for p in paths) / 1e6:.0f} MB, "
          f"{args.processes} processes x {args.threads} threads, {os.cpu_count()} cores", flush=True)

    results = []
    with Nginx(web_dir, args.workdir) as base:
        pool = os.path.join(args.workdir, "urls.parquet")
        pq.write_table(pa.table({"url": [synthetic_web.pool_url(e, base) for e in images],
                                 "caption": [e["caption"] for e in images]}), pool)
        env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")

        i2d_out = os.path.join(args.workdir, "img2dataset")
        shutil.rmtree(i2d_out, ignore_errors=True)
        seconds, cpu, peak, code = run_measured([
            os.path.join(bin_dir, "img2dataset"), "--url_list", pool, "--input_format", "parquet",
            "--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset",
            "--output_folder", i2d_out, "--processes_count", str(args.processes),
            "--thread_count", str(args.threads), "--image_size", "256", "--resize_mode", "keep_ratio",
            "--encode_quality", "95", "--number_sample_per_shard", "1000", "--distributor", "multiprocessing",
            "--timeout", "20", "--retries", "0"], env)
        results.append(("img2dataset", seconds, cpu, peak, count_samples(i2d_out) if code == 0 else 0))

        ours_out = os.path.join(args.workdir, "clipdata")
        shutil.rmtree(ours_out, ignore_errors=True)
        seconds, cpu, peak, code = run_measured([
            os.path.join(bin_dir, "clipdata"), "download", "--input", pool, "--output", ours_out,
            "--rows-per-shard", "1000", "--image-size", "256", "--resize-mode", "keep_ratio",
            "--encode-quality", "95", "--concurrency", str(args.threads), "--resize-threads", "2",
            "--allow-private-addresses", "--timeout", "20", "--retries", "0",
            "--direct_num_workers", str(args.processes)], env)
        results.append(("clipdata download", seconds, cpu, peak, count_samples(ours_out) if code == 0 else 0))

    resize_alone = {which: resize_only(paths, args.processes, which) for which in ("img2dataset", "clipdata")}

    print(f"\n{'':<34}{'seconds':>9}{'images':>9}{'images/s':>10}{'CPU-ms/image':>14}{'peak MB':>9}")
    for name, seconds, cpu, peak, n in results:
        print(f"{name:<34}{seconds:>9.1f}{n:>9,}{n / seconds:>10,.0f}{1000 * cpu / max(n, 1):>14.2f}{peak:>9,.0f}")
    for which, (resize_seconds, resized) in resize_alone.items():
        print(f"{which + ' resize alone':<34}{resize_seconds:>9.1f}{resized:>9,}{resized / resize_seconds:>10,.0f}")
    (_, i2d_s, i2d_cpu, i2d_peak, i2d_n), (_, our_s, our_cpu, our_peak, our_n) = results
    if i2d_n and our_n:
        print(f"\nclipdata / img2dataset: {(our_n / our_s) / (i2d_n / i2d_s):.2f}x images/s, "
              f"{(our_cpu / our_n) / (i2d_cpu / i2d_n):.2f}x CPU time per image, "
              f"{our_peak / i2d_peak:.2f}x peak memory (target: >= 1.0x speed at no more memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

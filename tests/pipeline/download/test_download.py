"""`clipdata download` against a real, misbehaving HTTP server on 127.0.0.1."""
import collections
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from fault_server import FaultServer

from clipdata.pipeline import cli
from clipdata.pipeline.download import job as download
from clipdata.pipeline.foundation import shards
from clipdata.pipeline.inspect import shard_check

CLIPDATA = str(Path(sys.executable).parent / "clipdata")

# (path on the fault server, the error kind the row must get; "success" for a stored image)
CASES = [
    ("/image.jpg?n=1", "success"),
    ("/image/120x90.png", "success"),
    ("/redirect/3", "success"),
    ("/retry-after/503/1/1/a", "success"),  # 503 with Retry-After, then the image
    ("/retry-after/429/1/1/b", "success"),
    ("/status/404", "http-404"),
    ("/status/500", "http-500"),
    ("/drip/0.5/100000", "deadline"),  # slower than the 2 s deadline
    ("/reset/500", "connection"),
    ("/truncated/100/1000", "truncated"),
    ("/html-as-image.jpg", "not-an-image"),
    ("/corrupt.jpg", "not-an-image"),
    ("/huge.png", "too-many-pixels"),
    ("/redirect-loop/a", "redirect-loop"),
    ("/x-robots-tag?value=noai", "opt-out"),
    ("/bytes/200000", "too-large"),
]

FAST = ["--allow-private-addresses", "--timeout", "2", "--retries", "2", "--max-body-bytes", "100000",
        "--max-pixels", "10000000", "--image-size", "64"]


def write_input(path, urls, captions=None):
    captions = captions or [f"caption {i}" for i in range(len(urls))]
    pq.write_table(pa.table({"url": urls, "caption": captions}), path)
    return path


def read_all_rows(output):
    return pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(output, "*.parquet")))])


def shard_bytes(output):
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(output, "*.tar")) + glob.glob(os.path.join(output, "*.parquet")))}


def test_every_fault_gets_its_own_error_and_every_row_is_accounted_for(tmp_path):
    with FaultServer() as server:
        urls = [server.url(path) for path, _ in CASES] + ["not a url", "ftp://example.com/x.jpg"]
        write_input(str(tmp_path / "in.parquet"), urls)
        started = time.time()
        code = cli.main(["download", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"),
                         "--rows-per-shard", "7", *FAST])
        seconds = time.time() - started
        assert server.hits("/status/500") == 3  # two retries
    assert code == 0
    # The slowest row is bounded by the deadline and the retry waits, not by the dripping server.
    assert seconds < 30

    rows = read_all_rows(str(tmp_path / "out")).to_pylist()
    assert len(rows) == len(urls)  # every input row, success or not
    # img2dataset's keys: shard id, then the row padded to the digits of rows-per-shard - 1.
    assert [r["key"] for r in rows] == [shards.sample_key(i // 7, i % 7, row_digits=1) for i in range(len(urls))]
    by_url = {r["url"]: r for r in rows}
    for (path, expected), url in zip(CASES, urls):
        row = by_url[url]
        assert (row["status"] == "success") == (expected == "success"), (path, row["error_message"])
    assert by_url["not a url"]["status"] == "failed" and by_url["ftp://example.com/x.jpg"]["status"] == "failed"
    # each failure's kind, set where it happened, counted in the shards' stats
    counted = collections.Counter()
    for name in glob.glob(os.path.join(tmp_path, "out", "*_stats.json")):
        counted.update(json.load(open(name))["errors"])
    expected_kinds = collections.Counter(kind for _, kind in CASES if kind != "success")
    expected_kinds["invalid-url"] += 2
    assert counted == expected_kinds
    # the words hold nothing that varies between runs (PIL quotes a BytesIO by its address)
    assert not [r["error_message"] for r in rows if r["error_message"] and " at 0x" in r["error_message"]]
    assert "<_io.BytesIO object>" in by_url[server.url("/html-as-image.jpg")]["error_message"]

    successes = [r for r in rows if r["status"] == "success"]
    for row in successes:
        assert row["width"] == 64 and row["height"] == 64  # border mode pads to a square
        assert len(row["phash"]) == 16 and len(row["sha256"]) == 64
        assert len(row["phash_centre"]) == 16 and row["phash_centre"] != row["phash"]
    assert all(r["phash_centre"] is None for r in rows if r["status"] != "success")
    manifest = json.load(open(tmp_path / "out" / "manifest.json"))
    assert manifest["openclip"]["train_num_samples"] == len(successes) == 5


def test_shards_are_clean_and_read_by_webdataset_and_openclip_stages(tmp_path):
    with FaultServer() as server:
        urls = [server.url(f"/image/{80 + i}x{60 + i}.jpg") for i in range(12)] + [server.url("/status/404")]
        write_input(str(tmp_path / "in.parquet"), urls, [f"a photo of thing {i}" for i in range(13)])
        assert cli.main(["download", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"),
                         "--rows-per-shard", "5", *FAST]) == 0
    out = str(tmp_path / "out")
    assert shard_check.check_paths([out]) == []
    tars = sorted(glob.glob(os.path.join(out, "*.tar")))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil"))
    assert len(samples) == 12
    assert all(s["jpg"].size == (64, 64) and s["txt"].startswith("a photo of thing") for s in samples)
    assert all(json.loads(json.dumps(s["json"]))["status"] == "success" for s in samples)

    # The stage list OpenCLIP 3.x builds for --dataset-type webdataset.
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(tars), wds.split_by_worker, wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.decode("pilrgb", handler=wds.warn_and_continue), wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.to_tuple("image", "text"),
    )
    pairs = list(pipeline)
    assert len(pairs) == 12 and all(img.mode == "RGB" for img, _ in pairs)


def test_private_addresses_are_refused_by_default(tmp_path):
    with FaultServer() as server:
        write_input(str(tmp_path / "in.parquet"), [server.url("/image.jpg"), "http://169.254.169.254/latest/meta-data/"])
        # every row refused: no image to train on, a failure (the rows are still all accounted for)
        assert cli.main(["download", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"),
                         "--timeout", "2"]) == 1
        assert server.hits("/image.jpg") == 0
    rows = read_all_rows(str(tmp_path / "out")).to_pylist()
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all(r["error_message"].startswith("private address") for r in rows)


def test_rerun_is_byte_identical_and_skips_committed_shards(tmp_path):
    with FaultServer() as server:
        urls = [server.url(f"/image/{50 + i}x{40 + i}.png") for i in range(9)] + [server.url("/status/404")]
        write_input(str(tmp_path / "in.parquet"), urls)
        args = ["download", "--input", str(tmp_path / "in.parquet"), "--rows-per-shard", "4", *FAST]
        assert cli.main([*args, "--output", str(tmp_path / "a")]) == 0
        assert cli.main([*args, "--output", str(tmp_path / "b")]) == 0
        hits = server.requests
        assert cli.main([*args, "--output", str(tmp_path / "a")]) == 0  # all committed: no request
        assert server.requests == hits
    assert shard_bytes(str(tmp_path / "a")) == shard_bytes(str(tmp_path / "b"))
    assert len(shard_bytes(str(tmp_path / "a"))) == 6


def test_retry_failed_downloads_only_the_failed_rows(tmp_path):
    with FaultServer() as server:
        urls = [server.url(f"/image/{60 + i}x60.jpg") for i in range(4)]
        urls += [server.url(f"/flaky/503/1/row{i}") for i in range(3)]  # fail once, then serve
        write_input(str(tmp_path / "in.parquet"), urls)
        out = str(tmp_path / "out")
        no_retries = [*FAST, "--retries", "0"]  # the last --retries wins
        assert cli.main(["download", "--input", str(tmp_path / "in.parquet"), "--output", out,
                         "--rows-per-shard", "4", *no_retries]) == 0
        first = read_all_rows(out).to_pylist()
        assert [r["status"] for r in first] == ["success"] * 4 + ["failed"] * 3
        good_hits = server.hits("/image/60x60.jpg")
        assert cli.main(["download", "--output", out, "--retry-failed", *no_retries]) == 0
        assert server.hits("/image/60x60.jpg") == good_hits  # successes were not downloaded again
    second = read_all_rows(out).to_pylist()
    assert [r["status"] for r in second] == ["success"] * 7
    assert [r["key"] for r in second] == [r["key"] for r in first]
    assert [r["sha256"] for r in second[:4]] == [r["sha256"] for r in first[:4]]
    assert shard_check.check_paths([out]) == []
    assert json.load(open(os.path.join(out, "manifest.json")))["openclip"]["train_num_samples"] == 7


def test_killed_run_resumes_to_the_same_shards_with_no_partial_files(tmp_path):
    with FaultServer() as server:
        # Slow images so the run is still going when it is killed.
        urls = [server.url(f"/slow/0.15?n={i}") for i in range(60)] + [server.url("/status/404")]
        write_input(str(tmp_path / "in.parquet"), urls)
        args = [CLIPDATA, "download", "--input", str(tmp_path / "in.parquet"), "--rows-per-shard", "5",
                "--concurrency", "2", *FAST]
        assert subprocess.run([*args, "--output", str(tmp_path / "straight")], capture_output=True).returncode == 0

        killed = str(tmp_path / "killed")
        process = subprocess.Popen([*args, "--output", killed], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        deadline = time.time() + 60
        while len(glob.glob(os.path.join(killed, "*_stats.json"))) < 3 and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        committed = len(glob.glob(os.path.join(killed, "*_stats.json")))
        assert 3 <= committed < 13, "kill the run part way"

        assert subprocess.run([*args, "--output", killed], capture_output=True).returncode == 0
    assert shard_bytes(killed) == shard_bytes(str(tmp_path / "straight"))
    assert not [f for f in os.listdir(killed) if ".tmp" in f]
    assert shard_check.check_paths([killed]) == []


def test_other_input_in_the_same_output_folder_is_refused(tmp_path, capsys):
    with FaultServer() as server:
        write_input(str(tmp_path / "a.parquet"), [server.url("/image.jpg")])
        write_input(str(tmp_path / "b.parquet"), [server.url("/image.png"), server.url("/image.jpg")])
        out = str(tmp_path / "out")
        assert cli.main(["download", "--input", str(tmp_path / "a.parquet"), "--output", out, *FAST]) == 0
        assert cli.main(["download", "--input", str(tmp_path / "b.parquet"), "--output", out, *FAST]) == 2
    assert "another input" in capsys.readouterr().err


def test_plan_is_a_function_of_the_input_alone():
    specs = download.plan_shards([("a", 5), ("b", 0), ("c", 7)], 4)
    assert [s.segments for s in specs] == [
        (("a", 0, 4),), (("a", 4, 5), ("c", 0, 3)), (("c", 3, 7),)]
    assert [s.shard_id for s in specs] == [0, 1, 2]


def test_build_runs_curate_then_download_and_resumes(tmp_path, capsys):
    with FaultServer() as server:
        rows = [(server.url(f"/image/{70 + i}x50.jpg"), f"a red circle number {i}") for i in range(6)]
        rows += [(server.url("/image.jpg?n=9"), "nothing matches here"), ("ftp://x.example/a.jpg", "red")]
        pq.write_table(pa.table({"url": [u for u, _ in rows], "caption": [c for _, c in rows]}),
                       str(tmp_path / "pool.parquet"))
        (tmp_path / "queries.txt").write_text("red\ncircle\n")
        args = ["build", "--pool", str(tmp_path / "pool.parquet"), "--queries", str(tmp_path / "queries.txt"),
                "--output", str(tmp_path / "run"), "--rows-per-shard", "4", *FAST]
        assert cli.main(args) == 0
        run = tmp_path / "run"
        stats = json.load(open(run / "curated" / "curate_stats.json"))
        assert stats["rows_kept"] == 6 and stats["dropped"] == {"bad-url": 1, "no-match": 1}
        manifest = json.load(open(run / "shards" / "manifest.json"))
        assert manifest["totals"]["samples"] == 6
        samples = list(wds.WebDataset(sorted(glob.glob(str(run / "shards" / "*.tar"))), shardshuffle=False))
        assert sorted(s["txt"].decode() for s in samples) == sorted(c for _, c in rows[:6])
        assert all(json.loads(s["json"])["entry_ids"] == [0, 1] for s in samples)  # red, circle

        capsys.readouterr()
        requests = server.requests
        assert cli.main(args) == 0  # both stages' outputs exist: nothing is redone
        assert server.requests == requests
        assert "skipped" in capsys.readouterr().out


def test_a_worldwide_list_s_language_reaches_every_sample(tmp_path):
    captions = ["a red circle drawn on white paper with a thick pen", "ein roter Kreis auf weißem Papier gezeichnet",
                "一个红色的圆圈画在白纸上"]
    with FaultServer() as server:
        pq.write_table(pa.table({"url": [server.url(f"/image/{70 + i}x50.jpg") for i in range(3)],
                                 "caption": captions}), str(tmp_path / "pool.parquet"))
        for language, words in {"en": "red\ncircle\n", "de": "Kreis\n", "zh": "红色\n"}.items():
            (tmp_path / f"{language}.txt").write_text(words, encoding="utf-8")
        (tmp_path / "manifest.json").write_text(json.dumps({"languages": {k: f"{k}.txt" for k in ("en", "de", "zh")}}))
        assert cli.main(["build", "--pool", str(tmp_path / "pool.parquet"), "--queries", str(tmp_path / "manifest.json"),
                         "--output", str(tmp_path / "run"), "--matcher-cache", "", *FAST]) == 0
    samples = list(wds.WebDataset(sorted(glob.glob(str(tmp_path / "run" / "shards" / "*.tar"))), shardshuffle=False))
    meta = {s["txt"].decode(): json.loads(s["json"]) for s in samples}
    assert {c: (m["language"], m["entry_ids"]) for c, m in meta.items()} == {
        captions[0]: ("en", [0, 1]), captions[1]: ("de", [2]), captions[2]: ("zh", [3])}
    table = pq.read_table(glob.glob(str(tmp_path / "run" / "shards" / "*.parquet"))[0])
    assert sorted(table.column("language").to_pylist()) == ["de", "en", "zh"]


def test_progress_writes_to_stderr_as_it_is_when_the_download_starts(tmp_path, monkeypatch):
    """Not the stderr of the moment the module was imported: under pytest that was a capture
    stream closed since, and the demo's download crashed on it (`I/O operation on closed file`)."""
    import io

    from clipdata.pipeline.download import job as download

    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    with download.Progress(str(tmp_path), total=1, already=set(), shard_digits=5) as progress:
        assert progress.line.stream is now


def test_progress_counts_images_of_shards_still_in_flight(tmp_path, monkeypatch):
    """A 10,000-row shard used to show "0 images" until it committed: workers note their rows as
    they go (RowsDone) and the line adds the notes of uncommitted shards."""
    import io

    from clipdata.pipeline.download import job as download
    from clipdata.pipeline.foundation import shards

    monkeypatch.setattr(download, "NOTE_EVERY", 0.0)
    stream = io.StringIO()
    with download.Progress(str(tmp_path), total=2, already=set(), shard_digits=5, stream=stream) as progress:
        note = download.RowsDone(str(tmp_path), 1)
        for status in ("success", "failed", "success"):
            note.add(shards.ShardRow(key="x", url="u", caption="c", status=status))
        assert progress.text().startswith("download: 0/2 shards, 2 images, ")
        assert "66.7% success" in progress.text()
        note.close()   # the shard committed: its note goes, the driver reads only shards in flight
        assert progress.text().startswith("download: 0/2 shards, 0 images, ")
    assert "download: 0/2 shards, 0 images" in stream.getvalue()             # the last line
    assert not os.path.exists(tmp_path / download.PROGRESS_DIR)            # notes removed at the end


def test_png_output_gets_a_compression_level_and_bad_image_options_are_refused_up_front(tmp_path, capsys):
    with FaultServer() as server:
        write_input(str(tmp_path / "in.parquet"), [server.url("/image/80x60.jpg"), server.url("/image/70x50.png")])
        args = ["download", "--input", str(tmp_path / "in.parquet"), *FAST]
        # PNG with the default quality: the format's own default (a compression level), not 95
        assert cli.main([*args, "--output", str(tmp_path / "png"), "--encode-format", "png"]) == 0
        samples = list(wds.WebDataset(str(tmp_path / "png" / "00000.tar"), shardshuffle=False).decode("pil"))
        assert [s["png"].size for s in samples] == [(64, 64), (64, 64)]
        capsys.readouterr()
        for bad, flag in ((["--encode-format", "png", "--encode-quality", "95"], "--encode-quality: for png"),
                          (["--encode-quality", "101"], "--encode-quality: for jpg"),
                          (["--image-size", "-5"], "--image-size"), (["--min-image-size", "-1"], "--min-image-size"),
                          (["--max-pixels", "0"], "--max-pixels")):
            out = tmp_path / f"bad{len(os.listdir(tmp_path))}"
            assert cli.main([*args, "--output", str(out), *bad]) == 2
            assert flag in capsys.readouterr().err
            assert not out.exists() or not os.listdir(out)   # refused before anything is written
        assert server.hits("/image/80x60.jpg") == 1


def test_a_second_download_into_a_live_runs_folder_is_refused_naming_it(tmp_path, capsys):
    with FaultServer() as server:
        urls = [server.url(f"/slow/1?n={i}") for i in range(30)]
        write_input(str(tmp_path / "in.parquet"), urls)
        out = tmp_path / "out"
        args = ["download", "--input", str(tmp_path / "in.parquet"), "--rows-per-shard", "5", "--concurrency", "1",
                *FAST, "--output", str(out)]
        first = subprocess.Popen([CLIPDATA, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        try:
            deadline = time.time() + 60
            while server.hits("/slow/1") == 0:   # the first run holds the folder and is downloading
                assert time.time() < deadline and first.poll() is None
                time.sleep(0.05)
            listed = sorted(os.listdir(out))
            assert cli.main(args) == 2
            assert f"being written by another clipdata download (pid {first.pid}" in capsys.readouterr().err
            assert sorted(os.listdir(out)) == listed     # the refused run touched nothing
            assert first.poll() is None
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()

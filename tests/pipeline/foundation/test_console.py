"""console.py: library noise hidden unless --verbose, our own lines and real errors kept."""
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from clipdata.pipeline.foundation import console
from clipdata.pipeline.foundation.console import is_noise


def test_library_chatter_is_noise_and_real_messages_are_not():
    assert is_noise("INFO:apache_beam.runners.worker.sdk_worker:Control channel established.")
    assert is_noise("INFO:faiss.loader:Loading faiss with AVX512-SPR support.")
    assert is_noise("ModuleNotFoundError(\"No module named 'faiss.swigfaiss_avx512_spr'\")")
    assert is_noise("WARNING:root:apitools not found, and bigquery client libraries are not available")
    assert is_noise("DEBUG:urllib3.connectionpool:Starting new HTTP connection")
    assert is_noise("WARNING:apache_beam.runners.portability.local_job_service:Worker: severity: WARN timestamp "
                    "{ seconds: 1 } message: \"No semi_persistent_directory found:  User registered objects\"")
    for kept in ("WARNING:root:disk nearly full", "ERROR:apache_beam.runners:Worker failed",
                 "Traceback (most recent call last):", "ModuleNotFoundError: No module named 'faiss'",
                 "dedup: searched 5/5 shards", "curate: 3 of 4 pool files read", ""):
        assert not is_noise(kept), kept


def _curate(tmp_path, *extra):
    pool = str(tmp_path / "pool.parquet")
    urls = [f"http://example.com/{i}.jpg" for i in range(40)]
    pq.write_table(pa.table({"url": urls, "caption": [f"a red dog {i}" for i in range(40)]}), pool)
    (tmp_path / "queries.txt").write_text("red dog\ndog\n")
    output = str(tmp_path / f"out{len(extra)}")
    command = [sys.executable, "-m", "clipdata.pipeline.cli", "curate", "--pool", pool,
               "--queries", str(tmp_path / "queries.txt"), "--output", output,
               "--direct_num_workers", "2", *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_a_beam_job_with_worker_processes_prints_only_its_own_lines(tmp_path):
    """Two local Beam worker processes log ~20 INFO lines each to the shared stderr; without
    --verbose none reach the user, the summary does; with --verbose they do."""
    quiet = _curate(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    lines = (quiet.stdout + quiet.stderr).splitlines()
    assert not [line for line in lines if is_noise(line) or "apitools" in line], lines
    assert any("40 pool rows" in line or "of 40" in line for line in lines), lines
    loud = _curate(tmp_path, "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert sum(1 for line in loud.stderr.splitlines() if line.startswith("INFO:")) >= 10


def test_verbose_after_a_quiet_command_in_the_same_process_shows_everything():
    import logging

    def filtered():
        return any(isinstance(f, console._DropNoise) for h in logging.getLogger().handlers for f in h.filters)

    try:
        console.configure_logging(verbose=False)
        assert filtered() and logging.getLogger().level == logging.WARNING
        console.configure_logging(verbose=True)
        assert not filtered() and logging.getLogger().level == logging.INFO
    finally:
        console.configure_logging(verbose=False)

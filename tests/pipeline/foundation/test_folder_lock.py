"""One writer per output folder (pipeline/foundation/folder_lock.py)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from clipdata.pipeline.foundation import folder_lock


def test_a_second_writer_is_refused_naming_the_first_and_the_lock_goes_with_it(tmp_path):
    folder = str(tmp_path / "out")
    with folder_lock.writer_lock(folder, "download"):
        with pytest.raises(folder_lock.FolderBusy) as busy:
            with folder_lock.writer_lock(folder, "curate"):
                pass
        assert busy.value.folder == folder
        assert busy.value.holder["command"] == "download" and busy.value.holder["pid"] == os.getpid()
        assert f"another clipdata download (pid {os.getpid()}" in str(busy.value)
    with folder_lock.writer_lock(folder, "curate"):   # released at the end of the block
        pass


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    folder = str(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from clipdata.pipeline.foundation import folder_lock\n"
        f"with folder_lock.writer_lock({folder!r}, 'dedup'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(folder_lock.FolderBusy, match=f"clipdata dedup \\(pid {holder.pid}"):
            with folder_lock.writer_lock(folder, "dedup"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 5
    while True:
        try:
            with folder_lock.writer_lock(folder, "dedup"):
                break
        except folder_lock.FolderBusy:
            assert time.time() < deadline, "the lock outlived its killed holder"
            time.sleep(0.05)

"""storage.py: the one atomic write, local or on any Beam file system."""
import hashlib
import os
import pickle

import numpy as np

from clipdata.pipeline.foundation.storage import atomic_write


def test_atomic_write_takes_what_pickle_hands_a_file(tmp_path):
    """pickle (protocol 5) writes an array over its frame size as a PickleBuffer, not bytes; the
    counting writer must take any buffer (a cached 500k-entry matcher is such a pickle)."""
    value = {"ids": np.arange(200_000, dtype=np.int64), "small": [1, 2, 3]}
    path = str(tmp_path / "sub" / "value.pkl")
    info = atomic_write(path, lambda handle: pickle.dump(value, handle, protocol=5))
    data = open(path, "rb").read()
    assert info == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert len(data) > 1_600_000
    loaded = pickle.loads(data)
    assert np.array_equal(loaded["ids"], value["ids"]) and loaded["small"] == [1, 2, 3]
    assert os.listdir(tmp_path / "sub") == ["value.pkl"]  # no temporary left


def test_atomic_write_of_bytes_reports_size_and_hash(tmp_path):
    path = str(tmp_path / "a.bin")
    assert atomic_write(path, b"hello") == {"bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    assert open(path, "rb").read() == b"hello"

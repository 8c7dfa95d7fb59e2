"""Shared test settings."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Built matchers go to a folder of this test run, not the user's ~/.cache/clipdata."""
    old = os.environ.get("CLIPDATA_CACHE")
    os.environ["CLIPDATA_CACHE"] = str(tmp_path_factory.mktemp("clipdata_cache"))
    yield
    if old is None:
        os.environ.pop("CLIPDATA_CACHE", None)
    else:
        os.environ["CLIPDATA_CACHE"] = old

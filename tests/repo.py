"""Where the repository's folders are, for tests in any sub-folder of tests/ (importable because
pytest puts tests/, the folder of conftest.py, on sys.path)."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")

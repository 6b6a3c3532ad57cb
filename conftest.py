"""Test setup shared by every test folder: the core's ``tests/``, each plugin's
``plugins/<name>/tests`` and the example plugin's tests (it sits at the repository root so
that all of them get it; a plugin's tests never import it). The teacherkit fixtures
(tiny_coco, plugin_host, register_plugin) come from the ``teacherkit.testing`` pytest
plugin."""

from __future__ import annotations

import os

# Keep each test process to one thread: the suite runs on 2 cores, often with xdist.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest
from hypothesis import settings

# CI explores a fixed set of examples (a red CI must be reproducible); local runs keep
# exploring new ones, and failures found there are replayed from .hypothesis/.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread per test process: the suite runs two processes on two cores
    (xdist), and oversubscribed threads stall each other (up to 8x slower measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal():
    """Ctrl-C raises KeyboardInterrupt in every test, as in a terminal. A suite started as a
    background job of a non-interactive shell (``cmd &``, nohup) inherits SIGINT ignored and
    Python keeps it so; the tests of what Ctrl-C does would then fail for that alone."""
    import signal

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

"""Fixtures for the Grounding DINO plugin tests (helpers live in ``dino_helpers.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """Other test runs share the two cores; one thread keeps timings steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Fixtures for the tests of the shipped examples (domains, pretrained tiny teachers,
quick-start config)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """Other test runs share the two cores; one thread avoids thread hand-off stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

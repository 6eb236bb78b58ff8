"""Shared fixtures of the representation tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread for these modules: on a shared 2-core machine, two OpenMP threads spin at
    every op's barrier while the other core is busy, which made these tests ~4x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""Unit tests run on one thread: tiny tensors gain nothing from threads, and on shared cores OpenMP barriers
stall for seconds."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

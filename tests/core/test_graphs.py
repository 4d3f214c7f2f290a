"""GraphCache off CUDA (runs the function as it is, made anew per call) and the scheduler allow-list."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from hrv_diffusion.core.graphs import GRAPH_SCHEDULERS, GraphCache, graphs_supported


def test_off_cuda_the_function_runs_eagerly_and_is_made_per_call():
    cache = GraphCache()
    made = []

    def make():
        made.append(1)
        return lambda x, y: (x * 2 + y, x.sum())

    x, y = torch.randn(3), torch.randn(3)
    for _ in range(2):
        out = cache("key", make, x, y)
        torch.testing.assert_close(out[0], x * 2 + y, rtol=0, atol=0)
        torch.testing.assert_close(out[1], x.sum(), rtol=0, atol=0)
    assert len(made) == 2  # nothing frozen off CUDA: Python state is read anew each call
    assert cache.graphs == {} and cache.captures == 0 and cache.replays == 0


def test_graphs_supported_needs_cuda_and_a_scheduler_without_a_step_index():
    pndm = type(GRAPH_SCHEDULERS[0], (), {})()
    euler = type("EulerDiscreteScheduler", (), {})()
    cpu, cuda = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(device=torch.device("cuda"))
    assert not graphs_supported(SimpleNamespace(unet=cpu, scheduler=pndm))
    assert graphs_supported(SimpleNamespace(unet=cuda, scheduler=pndm))
    assert not graphs_supported(SimpleNamespace(unet=cuda, scheduler=euler))

"""CUDA graphs for passes of fixed shapes: run once eagerly, capture, then replay with new inputs.

A batch-1 UNet pass of SD v1.4 in float32 launches thousands of small kernels, and an eager pass with our Python
attention processors spends much of its time launching them; a CUDA graph replays the recorded kernels with one
launch. The kernels are the ones the eager pass runs, in the same order, so a replay computes the same numbers.

``GraphCache`` holds one graph per key (e.g. the rows of a gradient pass). ``cache(key, make_fn, *inputs)``:

- with a new key, ``fn = make_fn()`` runs eagerly on ``inputs`` on a side stream (that run is the result, and the
  warm-up the capture needs), then ``fn`` is captured reading static copies of ``inputs``;
- with a known key, ``inputs`` are copied into the static copies, the graph is replayed and clones of its outputs
  are returned.

``fn`` must take tensors and return a tuple of tensors, do no host synchronization and no host-to-device copy, and
depend on nothing else that changes between calls of one key (Python state is frozen into the graph at capture).
The cache keeps ``fn`` (and so the tensors it closes over, which the graph reads) as long as its graph.
All graphs of a cache share one memory pool: outputs are cloned at once, so a replay of one graph may reuse the
memory of another's outputs. Off CUDA, or past ``max_graphs`` keys, ``fn`` simply runs eagerly.
"""
from __future__ import annotations

import torch

# Schedulers whose ``scale_model_input`` returns the sample as it is: a captured UNet pass then needs no step index
# (others look the timestep up with a host synchronization, which a capture forbids).
GRAPH_SCHEDULERS = ("PNDMScheduler", "DDIMScheduler", "DDPMScheduler")


def graphs_supported(pipe) -> bool:
    """Whether ``pipe``'s passes can be captured: a UNet (other families' passes were never captured: not yet) on
    a CUDA device and a scheduler of GRAPH_SCHEDULERS."""
    from hrv_diffusion.core.families import UNET, family_of

    if family_of(pipe) is not UNET:
        return False
    return pipe.unet.device.type == "cuda" and type(pipe.scheduler).__name__ in GRAPH_SCHEDULERS


class GraphCache:
    """Captured CUDA graphs by key; see the module docstring."""

    def __init__(self, max_graphs: int = 8):
        self.max_graphs = max_graphs
        self.graphs: dict = {}  # key -> (graph, static inputs, static outputs, fn: it keeps what fn closes over alive)
        self.pool = None
        self.stream = None
        self.replays = 0
        self.captures = 0

    def __call__(self, key, make_fn, *inputs: torch.Tensor) -> tuple:
        entry = self.graphs.get(key)
        if entry is not None:
            graph, static_in, static_out, _ = entry
            for static, value in zip(static_in, inputs):
                static.copy_(value)
            graph.replay()
            self.replays += 1
            return tuple(out.clone() for out in static_out)
        fn = make_fn()
        if not inputs[0].is_cuda or len(self.graphs) >= self.max_graphs:
            return fn(*inputs)
        return self._capture(key, fn, inputs)

    def _capture(self, key, fn, inputs) -> tuple:
        if self.stream is None:
            self.stream, self.pool = torch.cuda.Stream(), torch.cuda.graph_pool_handle()
        static_in = tuple(x.detach().clone() for x in inputs)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            warm = fn(*static_in)  # the warm-up is this call's result
        torch.cuda.current_stream().wait_stream(self.stream)
        result = tuple(out.detach().clone() for out in warm)
        del warm
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            static_out = tuple(out.detach() for out in fn(*static_in))
        self.graphs[key] = (graph, static_in, static_out, fn)  # the graph reads the tensors fn closes over
        self.captures += 1
        return result

    def clear(self) -> None:
        """Drop the graphs (their memory goes back to the allocator)."""
        self.graphs.clear()
        self.pool = None

"""A CPU stand-in for CUDA-graph replay: what a capture freezes, frozen.

A CUDA graph replays the kernels of its capture; the Python that launched them does not run again, so any Python
state it read (a step index, a controller's branch) stays as it was at capture. ``FrozenGraphCache`` does the same
on any device: the first call of a key makes ``fn`` and runs it; later calls of that key run that same ``fn`` again
(its closures, e.g. the step it was made for, unchanged) instead of a new one. Code that gives the same results
under it reads everything that changes between steps from tensors, as a replayed graph needs.
"""
from __future__ import annotations

from hrv_diffusion.core.graphs import GraphCache


class FrozenGraphCache(GraphCache):
    def __call__(self, key, make_fn, *inputs):
        if key not in self.graphs:
            self.graphs[key] = make_fn()
            self.captures += 1
        else:
            self.replays += 1
        return self.graphs[key](*inputs)

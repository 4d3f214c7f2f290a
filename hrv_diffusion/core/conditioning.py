"""The encoded prompts of one batch, in the rows a denoiser call needs (every family uses this one class)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Conditioning:
    """Encoded prompts of one batch of B images."""

    cond: torch.Tensor  # (B, T, D) prompt embeddings
    uncond: torch.Tensor | None  # (B, T, D) negative embeddings; None without CFG
    added: dict | None = None  # SDXL: {"text_embeds": (B, P), "time_ids": (B, 6)}; PixArt: its text mask (B, T)
    uncond_added: dict | None = None

    def rows(self, which: str) -> tuple[torch.Tensor, dict | None]:
        """Embeddings and added conditioning for the denoiser batch: "cfg" = [uncond, cond], "cond" = cond only."""
        if which == "cond":
            return self.cond, self.added
        if which != "cfg" or self.uncond is None:
            raise ValueError(f"rows must be 'cfg' (with CFG) or 'cond', not {which!r}")
        added = None
        if self.added is not None:
            added = {k: torch.cat([self.uncond_added[k], v]) for k, v in self.added.items()}
        return torch.cat([self.uncond, self.cond]), added

    def subset(self, index: torch.Tensor) -> "Conditioning":
        """The conditioning of samples ``index`` (a 1-D index into the B samples)."""
        index = index.to(self.cond.device)
        pick = lambda added: {k: v[index] for k, v in added.items()} if added is not None else None  # noqa: E731
        return Conditioning(self.cond[index], self.uncond[index] if self.uncond is not None else None,
                            pick(self.added), pick(self.uncond_added))

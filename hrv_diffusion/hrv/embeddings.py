"""Text embeddings of a concept set's words: what the cross-attention keys are built from.

Each word is encoded on its own, padded to 77 tokens:
- SD 1.x / 2.x: ``text_encoder(ids)[0]``, the last hidden state after the final LayerNorm, (W, 77, D).
- SDXL: ``pipe.encode_prompt(...)[0]``, the penultimate hidden states of CLIP-L and OpenCLIP bigG
  concatenated on the feature axis, (W, 77, 768 + 1280) for the real model.
- PixArt-α/Σ: T5's last hidden state of the word alone (with its mask), after a sink row, the empty prompt's
  ``</s>`` (T5 has no start token; see ``core/families/pixart.py``).
``token_lengths[i]`` counts the word's tokens *with* SOT and EOT, as the reference does (PixArt: with the sink row
and ``</s>``): the word itself occupies rows ``1 .. token_lengths[i] - 2`` of its embedding.

The result is stored as one safetensors file whose metadata says which model and concept set made it, so a
later step can refuse a file that belongs to another model or another set of words.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hrv_diffusion import __version__
from hrv_diffusion.hrv.concepts import ConceptSet
from hrv_diffusion.core.families import family_of
from hrv_diffusion.core.families import unet as unet_family
from hrv_diffusion.core.models import model_version

MAX_LENGTH = 77
_METADATA_KEY = "hrv_diffusion"


def token_lengths(tokenizer, words) -> torch.Tensor:
    """(W,) int64: tokens per word including SOT and EOT (the UNet family's CLIP count)."""
    return unet_family.token_lengths(tokenizer, words)


def encode_words(pipe, words, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode each word on its own, through the pipeline's family -> embeddings (W, 77, D) float32 on CPU (row 0
    the sink, rows ``1 .. n`` the word), token_lengths (W,) int64 (the word's n tokens + 2)."""
    words = list(words)
    if not words:
        raise ValueError("no words to encode")
    return family_of(pipe).encode_words(pipe, words, batch_size)


@dataclass
class TextEmbeddings:
    """Word embeddings (W, 77, D) float32, token lengths (W,) int64, and where they came from."""

    embeddings: torch.Tensor
    token_lengths: torch.Tensor
    metadata: dict = field(default_factory=dict)

    @property
    def concept_set(self) -> ConceptSet:
        """The concept set recorded in the metadata."""
        words, counts = self.metadata["words"], self.metadata["word_counts"]
        starts = [sum(counts[:c]) for c in range(len(counts))]
        return ConceptSet(tuple(self.metadata["concept_names"]),
                          tuple(tuple(words[s:s + n]) for s, n in zip(starts, counts)))


def build_text_embeddings(pipe, cs: ConceptSet, model_card: str, description: str,
                          batch_size: int = 32) -> TextEmbeddings:
    """Encode every word of ``cs`` with ``pipe`` and record the metadata that identifies the result."""
    embeddings, lengths = encode_words(pipe, cs.flat_words, batch_size=batch_size)
    metadata = {
        "model_card": model_card,
        "model_version": model_version(model_card),
        "description": description,
        "concept_fingerprint": cs.fingerprint(),
        "concept_names": list(cs.names),
        "word_counts": list(cs.word_counts),
        "words": list(cs.flat_words),
        "encoding": family_of(pipe).encoding(pipe),
        "dtype": str(pipe.text_encoder.dtype).removeprefix("torch."),
        "embedding_dim": int(embeddings.shape[-1]),
        "hrv_diffusion_version": __version__,
    }
    return TextEmbeddings(embeddings, lengths, metadata)


def embeddings_path(output_dir: str | os.PathLike, description: str, model_version: str) -> Path:
    return Path(output_dir) / "word_lists" / f"text_embedding_{description}_{model_version}.safetensors"


def save_text_embeddings(path: str | os.PathLike, te: TextEmbeddings) -> Path:
    """Write a safetensors file (metadata as JSON); atomic, so readers never see half a file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tensors = {"embeddings": te.embeddings.float().contiguous(),
               "token_lengths": te.token_lengths.to(torch.int64).contiguous()}
    try:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(te.metadata, ensure_ascii=False)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def regenerate_command(path: Path, metadata: dict) -> str:
    """The command that writes ``path`` again for the given model card and description."""
    output_dir = path.parent.parent if path.parent.name == "word_lists" else path.parent
    return (f"python descriptions_to_text_embeddings.py --model_card {metadata.get('model_card', 'CARD')} "
            f"--description {metadata.get('description', 'NAME')} --output_dir {output_dir}")


def load_text_embeddings(path: str | os.PathLike, expect: dict | None = None) -> TextEmbeddings:
    """Read a file written by ``save_text_embeddings``. Every key of ``expect`` must equal the stored one
    (e.g. model_version, concept_fingerprint); otherwise a ValueError says how to regenerate the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        hint = regenerate_command(path, expect or {})
        raise FileNotFoundError(f"{path} does not exist; make it with: {hint}")
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(_METADATA_KEY)
        if raw is None or set(f.keys()) != {"embeddings", "token_lengths"}:
            raise ValueError(f"{path} is not a text-embedding file of hrv_diffusion; make it with: "
                             f"{regenerate_command(path, expect or {})}")
        te = TextEmbeddings(f.get_tensor("embeddings"), f.get_tensor("token_lengths"), json.loads(raw))
    wrong = {k: (te.metadata.get(k), v) for k, v in (expect or {}).items() if te.metadata.get(k) != v}
    if wrong:
        found = ", ".join(f"{k}={stored!r} (expected {want!r})" for k, (stored, want) in wrong.items())
        raise ValueError(f"{path} does not match this run: {found}. Regenerate it with: "
                         f"{regenerate_command(path, {**te.metadata, **(expect or {})})}")
    w = len(te.metadata.get("words", ()))
    if te.embeddings.dim() != 3 or te.embeddings.shape[0] != w or te.token_lengths.shape != (w,):
        raise ValueError(f"{path} is inconsistent: embeddings {tuple(te.embeddings.shape)}, token_lengths "
                         f"{tuple(te.token_lengths.shape)}, {w} words; regenerate it")
    return te

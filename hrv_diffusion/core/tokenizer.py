"""The real CLIP BPE tokenizer, built offline from the vocabulary file that open_clip ships.

Hub tokenizers cannot be downloaded here, but ``open_clip_torch`` bundles OpenAI's BPE merges
(``bpe_simple_vocab_16e6.txt.gz``). We rebuild ``vocab.json``/``merges.txt`` the way open_clip's
``SimpleTokenizer`` does, so the ids equal the real ones ("a photo of a cat" ->
49406, 320, 1125, 539, 320, 2368, 49407).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

BOS_ID, EOS_ID, VOCAB_SIZE = 49406, 49407, 49408
OPENCLIP_PAD = "!"  # OpenCLIP pads with zeros and id 0 is "!": SD 2.x's tokenizer and SDXL's tokenizer_2 pad with it
N_MERGES = 48894  # 49152 - 256 - 2, as in open_clip's SimpleTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte -> printable unicode map (the 256 base symbols of CLIP's BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_file() -> Path:
    """Path of open_clip's bundled BPE file, found without importing open_clip (no torchvision needed)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The offline CLIP tokenizer needs the BPE file shipped with open_clip_torch: pip install open_clip_torch"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise RuntimeError(f"open_clip is installed but {path.name} is missing from it")
    return path


@lru_cache(maxsize=1)
def clip_vocab_files() -> tuple[str, str]:
    """Write vocab.json and merges.txt once per process into a cache folder; return their paths."""
    merges = gzip.open(bpe_file()).read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE
    folder = Path(os.environ.get("HRV_CACHE", Path(tempfile.gettempdir()) / "hrv_diffusion_tokenizer"))
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    tmp = folder / f"vocab.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    os.replace(tmp, vocab_path)
    tmp = folder / f"merges.{os.getpid()}.tmp"
    tmp.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    os.replace(tmp, merges_path)
    return str(vocab_path), str(merges_path)


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A ``CLIPTokenizer`` with the real OpenAI ids. SD 1.x pads with <|endoftext|>; SD 2.x's tokenizer (OpenCLIP
    ViT-H) and SDXL's tokenizer_2 (OpenCLIP bigG) with ``OPENCLIP_PAD`` ("!", id 0)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_files()
    return CLIPTokenizer(vocab, merges, pad_token=pad_token, model_max_length=77)

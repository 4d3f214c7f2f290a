"""An offline T5-style tokenizer for the tiny PixArt pipeline, built in code with the ``tokenizers`` library.

No SentencePiece model can be downloaded here, so we build what ``T5TokenizerFast`` wraps: a Unigram model over a
small word list, the Metaspace pre-tokenizer (``▁`` marks a word start), and a post-processor that appends
``</s>`` as T5 does (T5 has no start token). Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, as in T5. Every word
tokenizes: a listed word is one piece, any other word falls back to single letters (``▁`` + letters).
``"a red circle"`` -> ``▁a ▁red ▁circle </s>``. Random-weight tests need nothing more; the real models load
their own tokenizer.
"""
from __future__ import annotations

import string

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2

# Common prompt words and the toy world's words; anything else is spelled with letters.
WORDS = (
    "a an the of and with in on at to is photo picture painting image drawing style old new big small little "
    "red green blue yellow orange purple pink brown black white gray cyan magenta "
    "circle square triangle diamond cross ring star shape "
    "cat dog bird horse cow sheep fish lion tiger bear car truck boat plane house tree flower apple banana "
    "man woman person child face hat chair table cup bottle sky sea water fire snow rain sun moon city street "
    "wood metal glass stone gold silver paper plastic "
).split()


def t5_tokenizer(words=WORDS, model_max_length: int = 512):
    """A ``T5TokenizerFast`` over ``words`` (lower-cased text is expected; other symbols map to ``<unk>``)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    pieces += [(letter, -8.0) for letter in string.ascii_lowercase + string.digits]
    seen = {piece for piece, _ in pieces}
    pieces += [(f"▁{w}", -1.0) for w in dict.fromkeys(words) if f"▁{w}" not in seen]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=UNK_ID, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)])
    return T5TokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=model_max_length)

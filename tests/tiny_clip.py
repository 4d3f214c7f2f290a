"""A tiny open_clip CLIP built in code (random weights, real tokenizer) for the CLIP-based scores' tests."""
from __future__ import annotations

import open_clip
import torch
from torchvision import transforms


def build_tiny_clip():
    """(model, preprocess, tokenizer) like ``open_clip.create_model_and_transforms``, small enough for a CPU test."""
    torch.manual_seed(0)
    # head_width=16: the vision tower's heads = width // head_width (the default 64 would give 0 heads)
    vision = dict(layers=1, width=32, head_width=16, patch_size=8, image_size=32)
    model = open_clip.CLIP(embed_dim=16, vision_cfg=vision,
                           text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    preprocess = transforms.Compose([
        transforms.Resize((32, 32)), transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])
    return model, preprocess, open_clip.get_tokenizer("ViT-B-32")

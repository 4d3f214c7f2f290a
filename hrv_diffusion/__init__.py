"""hrv-diffusion: Head Relevance Vectors for the cross-attention heads of text-to-image diffusion models."""
__version__ = "0.1.0"

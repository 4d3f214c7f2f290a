"""The toy text-to-image model: a synthetic world with known concepts.

- ``data``: seeded scenes (colored shapes on plain or patterned backgrounds), their captions and 32x32 images.
- ``evaluator``: reads color, shape, size, position and background back from an image, analytically.
- ``model``: the SD-structured configs (AutoencoderKL, UNet2DConditionModel, frozen CLIP text encoder) and
  ``build_toy_pipeline(seed)``.
- ``evaluate``: generate from a trained toy folder and score the images with the evaluator.

Training lives in ``toy/train.py`` at the repository root; ``toy/README.md`` explains the design.
"""

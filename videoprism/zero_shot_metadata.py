"""Prompt templates for zero-shot video classification (data only)."""

# The prompt of the original VideoPrism video-text demo.
DEFAULT_TEMPLATE = "a video of {}."

# The Kinetics-700 prompt ensemble published with CLIP (openai/CLIP, data/prompts.md).
KINETICS_TEMPLATES = (
    "a photo of {}.",
    "a photo of a person {}.",
    "a photo of a person using {}.",
    "a photo of a person doing {}.",
    "a photo of a person during {}.",
    "a photo of a person performing {}.",
    "a photo of a person practicing {}.",
    "a video of {}.",
    "a video of a person {}.",
    "a video of a person using {}.",
    "a video of a person doing {}.",
    "a video of a person during {}.",
    "a video of a person performing {}.",
    "a video of a person practicing {}.",
    "a example of {}.",
    "a example of a person {}.",
    "a example of a person using {}.",
    "a example of a person doing {}.",
    "a example of a person during {}.",
    "a example of a person performing {}.",
    "a example of a person practicing {}.",
    "a demonstration of {}.",
    "a demonstration of a person {}.",
    "a demonstration of a person using {}.",
    "a demonstration of a person doing {}.",
    "a demonstration of a person during {}.",
    "a demonstration of a person performing {}.",
    "a demonstration of a person practicing {}.",
)

TEMPLATE_ENSEMBLES = {
    "default": (DEFAULT_TEMPLATE,),
    "ensemble": KINETICS_TEMPLATES,
    "kinetics": KINETICS_TEMPLATES,
}

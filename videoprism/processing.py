"""`VideoPrismProcessor`: the tokenizer and the video processor of a checkpoint, called together."""

from __future__ import annotations

import json
import os
from typing import Any

from ._sources import ModelSource, resolve_source
from .encoding import BatchEncoding
from .errors import TokenizerNotFoundError
from .tokenization import VideoPrismTokenizer
from .video_processing import VideoPrismVideoProcessor

PROCESSOR_CONFIG_NAME = "processor_config.json"
_TEXT_KWARGS = ("max_length", "padding", "truncation", "canonicalize")
_VIDEO_KWARGS = ("num_frames", "size", "resize_mode", "start_time", "end_time")


class VideoPrismProcessor:
    """Prepares texts and videos for the VideoPrism models in one call.

    `processor(text=..., videos=..., return_tensors="pt")` gives `input_ids` and `attention_mask` (from the
    tokenizer) and `pixel_values_videos` (from the video processor); either part may be left out.

    Args:
        video_processor: The video processor (default: the original pre-processing).
        tokenizer: The tokenizer; None for video-only models (then passing text raises).
    """

    def __init__(
        self,
        video_processor: VideoPrismVideoProcessor | None = None,
        tokenizer: VideoPrismTokenizer | None = None,
    ):
        self.video_processor = video_processor if video_processor is not None else VideoPrismVideoProcessor()
        self.tokenizer = tokenizer
        self._tokenizer_error: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | ModelSource,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        tokenizer: VideoPrismTokenizer | str | os.PathLike | ModelSource | None = None,
        **video_overrides: Any,
    ) -> VideoPrismProcessor:
        """Loads the video processor settings and the tokenizer of a folder or hub repo.

        A source without tokenizer files (the original Flax checkpoints) still loads: the processor handles videos
        and raises `TokenizerNotFoundError`, saying where the vocabulary can be had, when given text.

        Args:
            source: A folder, a hub repo id, a preset name, a checkpoint file (its folder is searched), or a
                `ModelSource` from `resolve_source`.
            revision: Hub branch, tag, commit or ref such as `refs/pr/4`.
            cache_dir: Hub cache folder.
            tokenizer: A tokenizer, or a source to load it from, instead of `source`'s.
            video_overrides: Video processor settings replacing the loaded ones, e.g. `num_frames=8`.
        """
        resolved = resolve_source(source, revision, cache_dir)
        video_processor = VideoPrismVideoProcessor.from_pretrained(resolved, **video_overrides)
        error = None
        if tokenizer is None:
            try:
                tokenizer = VideoPrismTokenizer.from_pretrained(resolved)
            except TokenizerNotFoundError as err:
                tokenizer, error = None, str(err)
        elif not isinstance(tokenizer, VideoPrismTokenizer):
            tokenizer = VideoPrismTokenizer.from_pretrained(tokenizer, cache_dir=cache_dir)
        processor = cls(video_processor, tokenizer)
        processor._tokenizer_error = error
        return processor

    def save_pretrained(self, folder: str | os.PathLike) -> list[str]:
        """Writes both parts (video_preprocessor_config.json, the tokenizer files) and processor_config.json.

        Returns:
            The paths written.
        """
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        paths = [self.video_processor.save_pretrained(folder)]
        if self.tokenizer is not None:
            paths += self.tokenizer.save_pretrained(folder)
        path = os.path.join(folder, PROCESSOR_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"processor_class": "VideoPrismProcessor"}, f, indent=2)
            f.write("\n")
        return [*paths, path]

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos: Any = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenizes `text` and pre-processes `videos`.

        Args:
            text: A string or a list of strings.
            videos: A video or a batch of videos, in any form `VideoPrismVideoProcessor` accepts.
            return_tensors: "pt", "np" or None.
            kwargs: Tokenizer options (`max_length`, `padding`, `truncation`, `canonicalize`) and video options
                (`num_frames`, `size`, `resize_mode`, `start_time`, `end_time`).

        Returns:
            A `BatchEncoding` with `input_ids` and `attention_mask` when text is given, and `pixel_values_videos`
            when videos are given.
        """
        unknown = set(kwargs) - set(_TEXT_KWARGS) - set(_VIDEO_KWARGS)
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}; text: {_TEXT_KWARGS}, video: {_VIDEO_KWARGS}")
        if text is None and videos is None:
            raise ValueError("pass text=..., videos=... or both")
        out = BatchEncoding()
        if text is not None:
            text_kwargs = {k: v for k, v in kwargs.items() if k in _TEXT_KWARGS}
            out.update(self._require_tokenizer()(text, return_tensors=return_tensors, **text_kwargs))
        if videos is not None:
            video_kwargs = {k: v for k, v in kwargs.items() if k in _VIDEO_KWARGS}
            out.update(self.video_processor(videos, return_tensors=return_tensors, **video_kwargs))
        return out

    def _require_tokenizer(self) -> VideoPrismTokenizer:
        if self.tokenizer is None:
            raise TokenizerNotFoundError(
                self._tokenizer_error
                or "this processor has no tokenizer; pass tokenizer=VideoPrismTokenizer.from_pretrained(...)"
            )
        return self.tokenizer

    def decode(self, ids: Any) -> str:
        """The text of one row of token ids."""
        return self._require_tokenizer().decode(ids)

    def batch_decode(self, batch: Any) -> list[str]:
        """The texts of a batch of token-id rows."""
        return self._require_tokenizer().batch_decode(batch)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(video_processor={self.video_processor!r}, tokenizer={self.tokenizer!r})"

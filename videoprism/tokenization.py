"""The VideoPrism text tokenizer: the original SentencePiece pipeline (canonicalise, encode, truncate, right-pad).

The released LvT models use the SentencePiece vocabulary `cc_en.32000` (C4 English, 32,000 pieces) with T5's id
layout: pad 0, eos 1, unk 2, no BOS. The original adds neither BOS nor EOS, truncates to 64 tokens and pads on the
right with 0. It is read from `spiece.model` (with the `sentencepiece` package, as the original does) or from a
`tokenizer.json` (with the `tokenizers` package).
"""

from __future__ import annotations

import json
import os
import re
import string
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._sources import ModelSource, hub_offline, resolve_source
from .encoding import BatchEncoding
from .errors import SourceNotFoundError, TokenizerNotFoundError

SPIECE_NAME = "spiece.model"
TOKENIZER_JSON_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
# The text tower's position table has 64 rows; the original truncates every text to 64 tokens.
MODEL_MAX_LENGTH = 64
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
# Hub sources that carry the real vocabulary (the original bucket is gone, google-deepmind/videoprism issue #63).
KNOWN_TOKENIZER_SOURCES = ("MHRDYN7/videoprism-lvt-base-f16r288",)

_PUNCTUATION_TO_SPACE = str.maketrans(string.punctuation, " " * len(string.punctuation))
_CHECKPOINT_SUFFIXES = (".npz", ".safetensors", ".bin", ".pt", ".pth")
_EXTRA_ID = re.compile(r"<extra_id_\d+>")


def canonicalize_text(text: str) -> str:
    """The original VideoPrism text canonicalisation.

    Every ASCII punctuation character becomes a space, the text is lower-cased, runs of whitespace collapse to
    one space, and a period is appended: `"Hello, World!"` -> `"hello world."`, `""` -> `"."`.
    """
    return " ".join(text.translate(_PUNCTUATION_TO_SPACE).lower().split()) + "."


def _missing_tokenizer_message(source: str, revision: str | None, reason: str | None = None) -> str:
    at = f" at revision {revision!r}" if revision else ""
    why = f" ({reason})" if reason else ""
    offline = " HF_HUB_OFFLINE is set: only cached hub files can be used." if hub_offline() else ""
    return (
        f"No tokenizer files ({SPIECE_NAME} or {TOKENIZER_JSON_NAME}) in {source!r}{at}{why}.{offline} The VideoPrism "
        "text vocabulary (SentencePiece c4_en, 32,000 pieces) cannot be downloaded from the original bucket "
        "(google-deepmind/videoprism issue #63), and the Flax checkpoints on the hub do not carry it. The hub repo "
        f"{KNOWN_TOKENIZER_SOURCES[0]!r} and the pull-request refs of 'google/videoprism-lvt-base-f16r288' "
        f"(revision='refs/pr/...') carry {SPIECE_NAME} / {TOKENIZER_JSON_NAME}: pass "
        f"tokenizer=VideoPrismTokenizer.from_pretrained({KNOWN_TOKENIZER_SOURCES[0]!r}), or "
        "VideoPrismTokenizer.from_pretrained('/path/to/spiece.model') for a local copy."
    )


class _SentencePieceBackend:
    """`spiece.model` read with the `sentencepiece` package, exactly as the original does."""

    filename = SPIECE_NAME

    def __init__(self, path: str):
        import sentencepiece

        with open(path, "rb") as f:
            self.model_bytes = f.read()
        self.processor = sentencepiece.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(self.model_bytes)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{path} is not a SentencePiece model ({err})") from err
        layout = (self.processor.pad_id(), self.processor.eos_id(), self.processor.unk_id())
        if layout != (PAD_ID, EOS_ID, UNK_ID) or self.processor.bos_id() != -1:
            warnings.warn(
                f"{path}: ids (pad, eos, unk, bos) = {(*layout, self.processor.bos_id())}, not the T5 layout "
                "(0, 1, 2, none) the VideoPrism text tower was trained with; token ids will not mean what it expects",
                stacklevel=3,
            )

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.processor.encode(texts, out_type=int, add_bos=False, add_eos=False)

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(ids)  # control pieces (pad, eos) decode to nothing

    def save(self, folder: str) -> str:
        path = os.path.join(folder, SPIECE_NAME)
        with open(path, "wb") as f:
            f.write(self.model_bytes)
        return path


class _TokenizersBackend:
    """`tokenizer.json` read with the `tokenizers` package, made to behave as the SentencePiece original."""

    filename = TOKENIZER_JSON_NAME

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer
        except ImportError as err:
            raise ImportError(
                f"reading {path} needs the `tokenizers` package (pip install tokenizers), or use a {SPIECE_NAME}"
            ) from err

        with open(path, encoding="utf-8") as f:
            self.json_text = f.read()
        try:
            data = json.loads(self.json_text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err})") from err
        model = data.get("model") or {}
        special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
        self.extra_ids = {t["id"] for t in data.get("added_tokens", []) if _EXTRA_ID.fullmatch(t.get("content", ""))}
        if model.get("type") == "Unigram":
            vocab = model["vocab"]
            pieces = [p for p, _ in vocab[:3]]
            if pieces != ["<pad>", "</s>", "<unk>"]:
                warnings.warn(
                    f"{path}: the first pieces are {pieces}, not the T5 layout (<pad>, </s>, <unk>) the VideoPrism "
                    "text tower was trained with; token ids will not mean what it expects",
                    stacklevel=3,
                )
            special |= {model.get("unk_id", UNK_ID)}
            # SentencePiece never matches control pieces (<pad>, </s>, <unk>, <extra_id_N>) in the text; a leading
            # ASCII space makes them unmatchable here too (pre-tokenized words hold no spaces), keeping ids and scores.
            model["vocab"] = [[f" {p}" if i in special else p, s] for i, (p, s) in enumerate(vocab)]
            self._num_pieces = len(vocab)
        else:
            self._num_pieces = None
        data["added_tokens"] = []  # no splitting on special-token strings, as in SentencePiece
        data["post_processor"] = None  # a T5 tokenizer.json appends </s>; the original never does
        data["truncation"] = None
        data["padding"] = None
        try:
            self.tokenizer = Tokenizer.from_str(json.dumps(data))
        except Exception as err:  # the tokenizers package raises plain Exception for malformed files
            raise ValueError(f"{path} is not a tokenizer.json the `tokenizers` package reads ({err})") from err
        self.special_ids = special

    @property
    def vocab_size(self) -> int:
        total = self._num_pieces if self._num_pieces is not None else self.tokenizer.get_vocab_size(False)
        return total - len(self.extra_ids)  # T5's <extra_id_N> sentinels are not part of the model's vocabulary

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.special_ids or i == UNK_ID])

    def save(self, folder: str) -> str:
        path = os.path.join(folder, TOKENIZER_JSON_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.json_text)
        return path


def _load_backend(path: str) -> _SentencePieceBackend | _TokenizersBackend:
    if path.endswith(".json"):
        return _TokenizersBackend(path)
    return _SentencePieceBackend(path)


class VideoPrismTokenizer:
    """Turns texts into the `input_ids` / `attention_mask` the VideoPrism text tower takes, as the original does.

    Build it with `from_pretrained` (a folder, a hub repo id, or a `spiece.model` / `tokenizer.json` path).

    Args:
        vocab_file: Path to a SentencePiece model (`spiece.model`) or a `tokenizer.json`.
        canonicalize: Default of the per-call `canonicalize` (the original pipeline canonicalises).
        model_max_length: The longest token sequence the text tower takes; longer `max_length` is refused.
    """

    model_input_names = ("input_ids", "attention_mask")
    pad_token_id = PAD_ID
    eos_token_id = EOS_ID
    unk_token_id = UNK_ID
    bos_token_id = None

    def __init__(
        self, vocab_file: str | os.PathLike, canonicalize: bool = True, model_max_length: int = MODEL_MAX_LENGTH
    ):
        vocab_file = os.fspath(vocab_file)
        if not os.path.isfile(vocab_file):
            raise TokenizerNotFoundError(_missing_tokenizer_message(vocab_file, None, "the file does not exist"))
        self._backend = _load_backend(vocab_file)
        self.vocab_file = vocab_file
        self.canonicalize = bool(canonicalize)
        self.model_max_length = int(model_max_length)
        self.name_or_path = vocab_file

    # ------------------------------------------------------------------------------------------------------------
    # Loading and saving

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | ModelSource,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        **overrides: Any,
    ) -> VideoPrismTokenizer:
        """Loads the tokenizer of a local folder, a hub repo, or a `spiece.model` / `tokenizer.json` file.

        A folder or repo holding both files is read through `spiece.model` (the original library).

        Args:
            source: A folder, a hub repo id (`MHRDYN7/videoprism-lvt-base-f16r288`), a preset name, a
                `spiece.model` / `tokenizer.json` path, a checkpoint file (its folder is searched), or a
                `ModelSource` from `resolve_source`.
            revision: Hub branch, tag, commit or ref such as `refs/pr/4`.
            cache_dir: Hub cache folder.
            overrides: `canonicalize` or `model_max_length`, replacing what `tokenizer_config.json` says.

        Raises:
            TokenizerNotFoundError: The source holds no tokenizer files (the Flax checkpoints do not), or does
                not exist.
        """
        try:
            resolved = resolve_source(source, revision, cache_dir)
            vocab_file = resolved.find_file([SPIECE_NAME, TOKENIZER_JSON_NAME], _is_vocabulary_file)
            config_file = resolved.find_file([TOKENIZER_CONFIG_NAME]) if vocab_file is not None else None
        except SourceNotFoundError as err:
            raise TokenizerNotFoundError(_missing_tokenizer_message(str(source), revision, str(err))) from err
        if vocab_file is None:
            raise TokenizerNotFoundError(_missing_tokenizer_message(str(source), resolved.revision))
        settings = _read_settings(config_file) if config_file else {}
        settings.update(overrides)
        tokenizer = cls(vocab_file, **settings)
        tokenizer.name_or_path = resolved.folder if _is_checkpoint_file(resolved) else resolved.given
        return tokenizer

    def save_pretrained(self, folder: str | os.PathLike) -> tuple[str, ...]:
        """Writes the vocabulary (`spiece.model` or `tokenizer.json`, as loaded) and `tokenizer_config.json`.

        Returns:
            The paths written.
        """
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        vocab_path = self._backend.save(folder)
        config_path = os.path.join(folder, TOKENIZER_CONFIG_NAME)
        config = {
            "tokenizer_class": "VideoPrismTokenizer",
            "model_max_length": self.model_max_length,
            "padding_side": "right",
            "truncation_side": "right",
            "pad_token": "<pad>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "canonicalize": self.canonicalize,
        }
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        return vocab_path, config_path

    # ------------------------------------------------------------------------------------------------------------
    # Encoding and decoding

    @property
    def vocab_size(self) -> int:
        """Pieces of the vocabulary (32,000 for the released models), excluding T5's `<extra_id_N>` sentinels."""
        return self._backend.vocab_size

    @property
    def backend(self) -> str:
        """Which library encodes: "sentencepiece" or "tokenizers"."""
        return "sentencepiece" if isinstance(self._backend, _SentencePieceBackend) else "tokenizers"

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, canonicalize: bool | None = None) -> list[int]:
        """The token ids of one text: no BOS, no EOS, neither truncated nor padded."""
        return self._encode([_check_text(text, None)], canonicalize)[0]

    def _encode(self, texts: list[str], canonicalize: bool | None) -> list[list[int]]:
        if self.canonicalize if canonicalize is None else canonicalize:
            texts = [canonicalize_text(t) for t in texts]
        return self._backend.encode(texts)

    def __call__(
        self,
        texts: str | Sequence[str],
        max_length: int | None = None,
        padding: bool | str = "max_length",
        truncation: bool = True,
        return_tensors: str | None = None,
        canonicalize: bool | None = None,
    ) -> BatchEncoding:
        """Tokenizes a text or a batch of texts as the original pipeline does.

        Args:
            texts: A string (a batch of one) or a sequence of strings.
            max_length: Length of the output rows (default and maximum: `model_max_length`, 64).
            padding: "max_length" pads every row to `max_length` (the original); "longest" (or True) pads to the
                longest text of the batch; False leaves rows unpadded (lists only).
            truncation: Cut texts longer than `max_length` (the original does); False raises for them instead.
            return_tensors: None for lists of ints, "np" for int64 numpy arrays, "pt" for int64 torch tensors.
            canonicalize: Apply `canonicalize_text` first (default: the tokenizer's setting, True).

        Returns:
            A `BatchEncoding` with `input_ids` (right-padded with 0) and `attention_mask` (1 = real token).
        """
        batch = _check_texts(texts)
        max_length = self._check_max_length(max_length)
        if padding is True:
            padding = "longest"
        if padding not in ("max_length", "longest", False, "do_not_pad"):
            raise ValueError(f"padding={padding!r}; use 'max_length', 'longest' or False")
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}; use None, 'np' or 'pt'")

        ids = self._encode(batch, canonicalize)
        for i, row in enumerate(ids):
            if len(row) > max_length and not truncation:
                raise ValueError(
                    f"text {i} ({batch[i][:40]!r}...) has {len(row)} tokens, more than max_length={max_length}; "
                    "pass truncation=True (the original truncates) or shorten it"
                )
        ids = [row[:max_length] for row in ids]
        if padding == "max_length":
            width = max_length
        elif padding == "longest":
            width = max(1, max(len(row) for row in ids))  # one pad column keeps a batch of empty texts well-formed
        else:
            width = None
        if width is None:
            if return_tensors is not None and len({len(row) for row in ids}) > 1:
                raise ValueError(
                    f"texts of different token lengths cannot be stacked into return_tensors={return_tensors!r} "
                    "without padding; pass padding='max_length' or 'longest'"
                )
            input_ids = [list(row) for row in ids]
            mask = [[1] * len(row) for row in ids]
        else:
            input_ids = [row + [PAD_ID] * (width - len(row)) for row in ids]
            mask = [[1] * len(row) + [0] * (width - len(row)) for row in ids]
        if return_tensors is None:
            return BatchEncoding(input_ids=input_ids, attention_mask=mask)
        input_ids = np.asarray(input_ids, dtype=np.int64).reshape(len(batch), -1)
        mask = np.asarray(mask, dtype=np.int64).reshape(len(batch), -1)
        if return_tensors == "pt":
            return BatchEncoding(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask))
        return BatchEncoding(input_ids=input_ids, attention_mask=mask)

    def _check_max_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self.model_max_length
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if max_length > self.model_max_length:
            raise ValueError(
                f"max_length={max_length} exceeds {self.model_max_length}, the longest text the VideoPrism text tower "
                f"takes (its position table has {self.model_max_length} rows); use max_length<={self.model_max_length}"
            )
        return int(max_length)

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        """The text of one row of token ids; padding and EOS are dropped."""
        ids = _as_id_list(ids)
        if ids and isinstance(ids[0], list):
            raise ValueError("decode takes one row of ids; use batch_decode for a batch")
        return self._backend.decode([i for i in ids if i not in (PAD_ID, EOS_ID)])

    def batch_decode(self, batch: Sequence[Sequence[int]] | np.ndarray | torch.Tensor) -> list[str]:
        """The texts of a batch of token-id rows."""
        return [self.decode(row) for row in _as_id_list(batch)]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, backend={self.backend!r}, "
            f"vocab_size={self.vocab_size}, canonicalize={self.canonicalize}, model_max_length={self.model_max_length})"
        )


def _is_vocabulary_file(path: str) -> bool:
    """A file source other than a checkpoint is taken as the vocabulary itself; a checkpoint's folder is searched."""
    return not path.endswith(_CHECKPOINT_SUFFIXES)


def _is_checkpoint_file(source: ModelSource) -> bool:
    return source.kind == "file" and not _is_vocabulary_file(source.path)


def _read_settings(path: str) -> dict[str, Any]:
    """Our settings out of a `tokenizer_config.json` (ours or transformers'; its other keys do not apply here)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable JSON file ({err})") from err
    settings = {}
    if isinstance(data.get("canonicalize"), bool):
        settings["canonicalize"] = data["canonicalize"]
    length = data.get("model_max_length")
    # transformers writes a huge sentinel when it does not know the limit: keep 64 then.
    if isinstance(length, int) and 0 < length <= MODEL_MAX_LENGTH:
        settings["model_max_length"] = length
    return settings


def _check_text(text: Any, index: int | None) -> str:
    if not isinstance(text, str):
        where = "texts" if index is None else f"texts[{index}]"
        raise TypeError(f"{where} is a {type(text).__name__}; expected a str")
    return text


def _check_texts(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise TypeError(f"texts is a {type(texts).__name__}; expected a str or a list of str")
    batch = [_check_text(t, i) for i, t in enumerate(texts)]
    if not batch:
        raise ValueError("texts is empty; pass at least one string")
    return batch


def _as_id_list(ids: Any) -> list:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64).tolist()
    return [_as_id_list(row) if isinstance(row, (list, tuple, np.ndarray, torch.Tensor)) else int(row) for row in ids]

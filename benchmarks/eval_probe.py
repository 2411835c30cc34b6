"""The paper's frozen-feature probe on a Kinetics-style set, end to end (the original release's colab protocol).

Reads a Kinetics annotation CSV (``youtube_id,time_start,time_end,label,split``) over a folder of local video files,
trains the attentive probe on the ``train`` rows with the encoder frozen (Adam-like: AdamW without weight decay,
lr 1e-4, 5 epochs, batch 16, no warm-up, no label smoothing, no dropout, no early stopping, full token cache) and
reports the saved classifier's top-1 / top-5 / mean per-class accuracy on the ``val`` rows (``validate`` and ``test``
also count as held-out splits, in that order of preference).

A row's video is ``FOLDER/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the trimmed clips of the usual Kinetics
downloaders), else ``FOLDER/<youtube_id>.mp4`` (the full video: the ``[time_start, time_end)`` window is used), also
one level down in a folder named after the label or split; rows without a local file are skipped and counted.

Published (VideoPrism paper, K400, frozen encoder + trained attentive probe, all training clips): top-1 82.9
(videoprism_public_v1_base) and 85.0 (videoprism_public_v1_large). Usage::

    python benchmarks/eval_probe.py kinetics400/annotations.csv kinetics400/videos --model \\
        google/videoprism-base-f16r288 --out ./k400-probe
    python benchmarks/eval_probe.py annotations.csv videos --shots 10      # the colab's 10-shot variant
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videoprism.probe.api import train_probe  # noqa: E402

PROTOCOL = dict(
    head="attentive",
    cache="tokens",
    lr=1e-4,
    epochs=5,
    batch_size=16,
    weight_decay=0.0,
    warmup=0.0,
    label_smoothing=0.0,
    dropout=0.0,
    patience=0,
)
HELD_OUT = ("val", "validate", "test")
PUBLISHED = {"videoprism_public_v1_base": 82.9, "videoprism_public_v1_large": 85.0}


def find_video(folder: Path, row: dict[str, str]) -> tuple[Path, bool] | None:
    """The local file of a row and whether it is already trimmed to the row's window."""
    vid, start, end = row["youtube_id"], int(float(row["time_start"])), int(float(row["time_end"]))
    trimmed, full = f"{vid}_{start:06d}_{end:06d}.mp4", f"{vid}.mp4"
    for base in (folder, folder / row["label"], folder / row["split"]):
        if (base / trimmed).is_file():
            return base / trimmed, True
        if (base / full).is_file():
            return base / full, False
    return None


def write_lists(annotations: Path, folder: Path, work: Path) -> tuple[Path, Path, dict[str, int]]:
    """Writes ``train.csv`` and ``val.csv`` (path,label,start,end) for the rows with a local file."""
    with open(annotations, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {"youtube_id", "time_start", "time_end", "label", "split"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"{annotations}: missing column(s) {sorted(missing)} of a Kinetics annotation CSV")
    splits = {row["split"] for row in rows}
    held_out = next((s for s in HELD_OUT if s in splits), None)
    if "train" not in splits or held_out is None:
        raise SystemExit(f"{annotations}: needs 'train' rows and one of {HELD_OUT}; found splits {sorted(splits)}")
    counts = {"train": 0, "val": 0, "skipped": 0}
    lists = {"train": work / "train.csv", "val": work / "val.csv"}
    writers = {name: open(path, "w", newline="", encoding="utf-8") for name, path in lists.items()}  # noqa: SIM115
    try:
        for f in writers.values():
            csv.writer(f).writerow(["path", "label", "start", "end"])
        for row in rows:
            part = "train" if row["split"] == "train" else "val" if row["split"] == held_out else None
            if part is None:
                continue
            found = find_video(folder, row)
            if found is None:
                counts["skipped"] += 1
                continue
            path, trimmed = found
            span = ["", ""] if trimmed else [row["time_start"], row["time_end"]]
            csv.writer(writers[part]).writerow([str(path.resolve()), row["label"], *span])
            counts[part] += 1
    finally:
        for f in writers.values():
            f.close()
    return lists["train"], lists["val"], counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", type=Path, help="Kinetics CSV: youtube_id,time_start,time_end,label,split")
    parser.add_argument("videos", type=Path, help="folder of the local video files")
    parser.add_argument("--model", default="google/videoprism-base-f16r288", help="encoder checkpoint")
    parser.add_argument("--out", type=Path, help="classifier folder (default: a temporary one)")
    parser.add_argument("--shots", type=int, help="train on K clips per class (the colab's 10-shot: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, help="decoding processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: the model's)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        train_csv, val_csv, counts = write_lists(args.annotations, args.videos, Path(tmp))
        out = args.out or Path(tmp) / "classifier"
        run = train_probe(
            train_csv,
            out,
            args.model,
            val=val_csv,
            shots=args.shots,
            workers=args.workers,
            num_frames=args.num_frames,
            seed=args.seed,
            device=args.device,
            **PROTOCOL,
        )
    report = {
        "model": args.model,
        "clips": counts,
        "shots": args.shots,
        "protocol": PROTOCOL,
        "val": run.metrics["val"],
        "val_features": run.metrics["val_features"],
        "published_top1": PUBLISHED,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

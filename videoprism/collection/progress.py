"""Progress reports of the collection tools: a tqdm bar on a terminal, periodic lines otherwise, or nothing."""

from __future__ import annotations

import sys
import time

from ..errors import EmbedSettingsError

__all__ = ["Progress"]


class Progress:
    """A tqdm bar on a terminal, plain periodic lines otherwise, or nothing."""

    def __init__(self, total: int, mode: str | bool | None, interval: float, name: str = "embed") -> None:
        if mode is True or mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        if mode not in ("bar", "lines", False, None, "none"):
            raise EmbedSettingsError(f"progress={mode!r}; use 'auto', 'bar', 'lines' or False")
        self.mode = mode if mode in ("bar", "lines") else None
        self.total, self.interval, self.name = total, interval, name
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="video", file=sys.stderr, dynamic_ncols=True, desc=name)

    def update(self, videos: int, clips: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        elapsed = max(now - self.t0, 1e-9)
        rate = clips / elapsed
        if self.bar is not None:
            self.bar.update(videos - self.bar.n)
            self.bar.set_postfix_str(f"{clips} clips, {rate:.2f} clips/s, {failed} failed", refresh=False)
            self.bar.refresh()
        elif self.mode == "lines" and (final or now - self.last >= self.interval):
            self.last = now
            eta = "?"
            if 0 < videos < self.total:
                eta = _fmt_seconds(elapsed / videos * (self.total - videos))
            elif videos >= self.total:
                eta = "0s"
            print(
                f"videoprism {self.name}: {videos}/{self.total} videos, {clips} clips, {rate:.2f} clips/s, "
                f"{failed} failed, elapsed {_fmt_seconds(elapsed)}, ETA {eta}",
                file=sys.stderr,
                flush=True,
            )

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        elif self.mode == "lines":
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

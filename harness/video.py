"""Episode videos, encoded on a background thread so that recording never stalls the stepping loop
(the other K-1 environments keep stepping while an episode's frames are written)."""
from __future__ import annotations

import queue
import threading
import warnings
from pathlib import Path

import numpy as np


def _mp4_available() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # no ffmpeg binary here: GIF instead
        return False
    return True


class VideoWriter:
    """Writes videos under <results_dir>/videos/<label>/<suite>/ in submission order, one thread.

    `submit` returns the video's path (relative to results_dir) at once, so the episode record can name
    it; the file is complete after `close()`. mp4 through imageio's ffmpeg plugin, GIF when no ffmpeg."""

    def __init__(self, results_dir: Path, fps: int = 20):
        self.results_dir = Path(results_dir)
        self.fps = fps
        self.extension = ".mp4" if _mp4_available() else ".gif"
        self._queue: queue.Queue = queue.Queue()
        self._errors: list[str] = []
        self._thread = threading.Thread(target=self._work, name="video-writer", daemon=True)
        self._thread.start()

    def submit(self, label: str, suite: str, task_id: int, init_index: int, seed: int, success: bool,
               frames: list[np.ndarray]) -> str:
        folder = self.results_dir / "videos" / label / suite
        stem = f"task{task_id}_init{init_index}_seed{seed}_{'success' if success else 'failure'}"
        path = folder / f"{stem}{self.extension}"
        self._queue.put((path, frames))
        return str(path.relative_to(self.results_dir))

    def _work(self) -> None:
        import imageio.v2 as imageio

        while (item := self._queue.get()) is not None:
            path, frames = item
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix == ".mp4":
                    imageio.mimwrite(path, frames, fps=self.fps, macro_block_size=1)
                else:
                    imageio.mimwrite(path, frames, duration=1 / self.fps)
            except Exception as error:  # a video is a by-product: the episode's record stands without it
                self._errors.append(f"{path}: {type(error).__name__}: {error}")

    def close(self) -> list[str]:
        """Wait until every submitted video is written; returns the ones that failed, with why."""
        self._queue.put(None)
        self._thread.join()
        for error in self._errors:
            warnings.warn(f"video not written: {error}", stacklevel=2)
        return list(self._errors)

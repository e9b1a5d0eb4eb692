"""The rollout gallery: every recorded episode (a record's `info.video`, a path relative to the results
directory, written by the runner's `--record-video K`) as a captioned clip, failures beside successes."""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

VIDEO_COLUMN = "info.video"
PLAYABLE = (".mp4", ".webm")  # shown in <video>; anything else (the runner's GIF fallback) in <img>
OUTCOMES = ("failure", "error", "success")  # display order inside a group: what went wrong first
MAX_SHOWN = 24  # clips embedded per (label, suite, outcome); the rest are listed as links, so pages stay light
POSTER_FOLDER = "posters"  # under the report folder: each shown video's last frame, its outcome at a glance


@dataclass(frozen=True)
class Clip:
    label: str
    suite: str
    task_id: str
    task_text: str  # the instruction (else the task's name)
    init_index: int
    seed: int
    outcome: str  # success | failure | error (an error counts as a failure in the tables)
    href: str  # relative to the report folder
    exists: bool  # the record names a file that is there
    poster: str | None = None  # still shown before the video plays, relative to the report folder

    @property
    def playable(self) -> bool:
        return Path(self.href).suffix.lower() in PLAYABLE

    @property
    def where(self) -> str:
        return f"task {self.task_id} · init {self.init_index} · seed {self.seed}"

    @property
    def caption(self) -> str:
        return f"{self.label} / {self.suite} · {self.where} · {self.outcome}"


def _task_text(row) -> str:
    for key in ("instruction", "task_name"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key] if key == "instruction" else row[key].replace("_", " ")
    return f"task {row['task_id']}"


def _outcome(row) -> str:
    if row.get("status") in ("error", "policy_error", "env_error"):  # schema 1 said "error" for both
        return "error"
    return "success" if bool(row["success"]) else "failure"


def clips(frame: pd.DataFrame, results_dir: Path, out_dir: Path) -> list[Clip]:
    """One clip per episode record with a video, ordered by label, suite, task, init state and seed."""
    if frame.empty or VIDEO_COLUMN not in frame:
        return []
    found = []
    for row in frame[frame[VIDEO_COLUMN].notna()].to_dict("records"):
        path = Path(results_dir) / str(row[VIDEO_COLUMN])
        href = Path(os.path.relpath(path, out_dir)).as_posix()
        found.append(Clip(str(row["label"]), str(row["suite"]), str(row["task_id"]),
                          _task_text(row), int(row["init_index"]), int(row["seed"]),
                          _outcome(row), href, path.is_file()))

    def order(clip: Clip):
        task = int(clip.task_id) if clip.task_id.isdigit() else clip.task_id
        return clip.label, clip.suite, str(type(task)), task, clip.init_index, clip.seed

    return sorted(found, key=order)


def _groups(all_clips: list[Clip]) -> dict[tuple[str, str], list[Clip]]:
    groups: dict[tuple[str, str], list[Clip]] = {}
    for clip in all_clips:
        groups.setdefault((clip.label, clip.suite), []).append(clip)
    return groups


def _shown_and_rest(group: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    """The clips a group embeds (failures first, at most MAX_SHOWN per outcome) and the ones it only lists."""
    shown, rest = [], []
    for outcome in OUTCOMES:
        chosen = [c for c in group if c.outcome == outcome]
        shown += chosen[:MAX_SHOWN]
        rest += chosen[MAX_SHOWN:]
    return shown, rest


def _last_frame(video: Path) -> np.ndarray | None:
    """The final frame (ffmpeg decodes only the last half second); None when the file cannot be read."""
    import imageio_ffmpeg

    try:
        frames = imageio_ffmpeg.read_frames(str(video), input_params=["-sseof", "-0.5"])
        meta = next(frames)
        last = None
        for last in frames:
            pass
    except (OSError, RuntimeError, StopIteration):
        return None
    if last is None:
        return None
    width, height = meta["size"]
    return np.frombuffer(last, np.uint8).reshape(height, width, 3)


def with_posters(all_clips: list[Clip], out_dir: Path) -> list[Clip]:
    """Give each embedded video a poster (its last frame as JPEG under out_dir/posters/), written once."""
    import imageio.v2 as imageio

    embedded = {id(c) for group in _groups(all_clips).values() for c in _shown_and_rest(group)[0]}
    out = []
    for clip in all_clips:
        if id(clip) in embedded and clip.exists and clip.playable:
            video = (Path(out_dir) / clip.href).resolve()
            poster = Path(out_dir) / POSTER_FOLDER / clip.label / clip.suite / f"{video.stem}.jpg"
            frame = None if poster.is_file() and poster.stat().st_mtime >= video.stat().st_mtime else _last_frame(video)
            if frame is not None:
                poster.parent.mkdir(parents=True, exist_ok=True)
                imageio.imwrite(poster, frame, quality=85)
            if poster.is_file():
                clip = replace(clip, poster=poster.relative_to(out_dir).as_posix())
        out.append(clip)
    return out


def to_markdown(all_clips: list[Clip]) -> list[str]:
    if not all_clips:
        return []
    lines = ["## Rollout videos", ""]
    for clip in all_clips:
        text = f"{clip.where} · {clip.outcome}"
        lines.append(f"- {clip.label} / {clip.suite}: " + (f"[{text}]({clip.href})" if clip.exists
                                                          else f"{text} (video file missing: {clip.href})"))
    return lines + [""]


CSS = """
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 0.8em; margin: 0.4em 0 1em; }
.gallery figure { margin: 0; border: 3px solid #ccc; border-radius: 4px; padding: 0.3em; background: #fafafa; }
.gallery figure.success { border-color: #2da44e; }
.gallery figure.failure, .gallery figure.error { border-color: #cf222e; }
.gallery video, .gallery img { width: 100%; height: auto; display: block; background: #000; border: none; }
.gallery .missing { overflow-wrap: anywhere; font-size: 0.8em; color: #999; }
.gallery figcaption { font-size: 0.78em; margin-top: 0.25em; }
.gallery figcaption .outcome { font-weight: 600; text-transform: uppercase; }
.gallery figcaption .task { color: #555; display: block; overflow-wrap: anywhere; }
"""


def _figure(clip: Clip) -> str:
    src = html.escape(clip.href)
    if not clip.exists:
        media = f'<p class="missing">video file missing: {src}</p>'
    elif clip.playable:
        poster = f' poster="{html.escape(clip.poster)}"' if clip.poster else ""
        media = f'<video src="{src}"{poster} controls muted loop playsinline preload="metadata"></video>'
    else:
        media = f'<img src="{src}" alt="{html.escape(clip.caption)}" loading="lazy">'
    return (f'<figure class="{clip.outcome}">{media}<figcaption><span class="outcome">{clip.outcome}</span> · '
            f"{html.escape(clip.label)} / {html.escape(clip.suite)} · {html.escape(clip.where)}"
            f'<span class="task">{html.escape(clip.task_text)}</span></figcaption></figure>')


def to_html(all_clips: list[Clip]) -> list[str]:
    """The gallery section: per label and suite one grid, failures first (at most MAX_SHOWN per outcome)."""
    if not all_clips:
        return []
    out = ['<section id="s-videos"><h2>Rollout videos</h2>',
           '<p class="legend">Recorded episodes (<code>run --record-video K</code> records init states 0..K-1 of '
           "every task). Frame colour: green success, red failure or error.</p>"]
    for (label, suite), group in _groups(all_clips).items():
        counts = {o: sum(c.outcome == o for c in group) for o in OUTCOMES}
        summary = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
        out.append(f"<h3>{html.escape(label)} / {html.escape(suite)} ({summary})</h3>")
        shown, rest = _shown_and_rest(group)
        out.append(f'<div class="gallery">{"".join(_figure(c) for c in shown)}</div>')
        if rest:
            out.append(f"<details><summary>{len(rest)} more clip(s)</summary><ul>"
                       + "".join(f'<li><a href="{html.escape(c.href)}">{html.escape(c.where)} · {c.outcome}</a></li>'
                                 for c in rest) + "</ul></details>")
    out.append("</section>")
    return out

"""Training metrics: `<out>/metrics.csv`, appended across resumptions, and TensorBoard when it is installed."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

METRICS = "metrics.csv"


class Metrics:
    """metrics.csv (appended across resumptions) and TensorBoard when installed."""

    FIELDS = ("stage", "step", "loss", "action_loss", "fm_loss", "action_accuracy", "action_l1", "lr",
              "samples_per_s", "elapsed_s")

    def __init__(self, out: Path, fresh: bool):
        self.path = out / METRICS
        new = fresh or not self.path.exists()
        self.file = open(self.path, "w" if new else "a", newline="")  # noqa: SIM115 (closed by close())
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "action_loss", "fm_loss", "action_accuracy", "action_l1", "lr", "samples_per_s"):
                if row.get(key, "") != "":
                    self.tb.add_scalar(f"stage{row['stage']}/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def trim_after(path: Path, stage: str, step: int) -> None:
    """Drop metric rows logged after the state we resume from (they will be logged again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    order = {"1": 0, "2": 1}
    keep = [r for r in rows if (order[r["stage"]], int(r["step"])) <= (order[stage], step)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=Metrics.FIELDS)
        writer.writeheader()
        writer.writerows(keep)

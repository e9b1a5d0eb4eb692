"""The resumable training state in `<out>/train_state/` (weights, optimizer, RNG, data position), written
atomically, and the check that a resumed run has the settings of the saved one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lamp_bench.harness.config import ConfigError
from lamp_bench.models.lamp.model import LaMP
from lamp_bench.models.training.config import RESUME_FREE, TrainConfig
from lamp_bench.models.training.setup import Run

STATE_DIR = "train_state"


def save_state(out: Path, run: Run, stage: str, step: int, optimizer: torch.optim.Optimizer | None) -> None:
    """Write the resumable state to a fresh folder, then swap it in (a kill leaves the old one)."""
    final, tmp, old = out / STATE_DIR, out / f"{STATE_DIR}.tmp", out / f"{STATE_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in run.model.state_dict().items()}, tmp / "model.safetensors")
    torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({
        "stage": stage, "step": step, "finished": False, "lora": isinstance_peft(run.model),
        "train_config": _resume_identity(run.config), "model_config": run.model.cfg.to_dict(),
    }, indent=1))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def mark_finished(out: Path, config: TrainConfig) -> None:
    """The checkpoint is written: keep only a marker (a re-run then does nothing), not the weights twice."""
    tmp = out / f"{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "state.json").write_text(json.dumps({"finished": True, "train_config": _resume_identity(config)}, indent=1))
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    tmp.rename(out / STATE_DIR)


def isinstance_peft(model: LaMP) -> bool:
    from peft import PeftModel

    return isinstance(model.language_model, PeftModel)


def _resume_identity(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the saved one, as JSON values (tuples become lists)."""
    return json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k not in RESUME_FREE}))


def find_state(out: Path) -> Path | None:
    for name in (STATE_DIR, f"{STATE_DIR}.old"):  # .old: killed between the two renames
        if (out / name / "state.json").is_file():
            return out / name
    return None


def read_state(out: Path, config: TrainConfig) -> tuple[Path, dict[str, Any]] | None:
    folder = find_state(out)
    if folder is None:
        return None
    state = json.loads((folder / "state.json").read_text())
    previous = state["train_config"]
    now = _resume_identity(config)
    changed = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{out} holds a training run with different settings ({', '.join(changed)}); "
                          "use another --out folder, or the same settings to resume it")
    return folder, state

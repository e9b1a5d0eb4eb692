"""`lineage.json`, written by the trainer next to its checkpoint: what produced these weights.

    checkpoint_hash      the hash episode records carry (models.checkpoint.checkpoint_hash)
    trainer              the trainer's code commit (harness.provenance.code_commit) and package versions
    training_config      the TrainConfig as run
    data                 the demonstration set's identity: demo_set_hash (sha256 over the files' contents in
                         path order), and per file its suite, task, dataset key, demos and the init states they
                         came from; `collection`: the collection settings (suite, tasks, episodes, init states,
                         noise, oracle) when the folder has a `demo_set.json` manifest (sweeps write one)
    depth_estimator      the frozen estimator the motion pathway was trained with: source, weights folder and
                         the hash of its safetensors (the same identity episodes record); {"source": "sim"} for
                         simulator depth, None without a motion pathway
    selection            filled in by checkpoint selection (harness.selection) when it picked these weights

A lineage file whose checkpoint_hash differs from the folder's weights is stale; readers (results.lineage)
say so instead of trusting it.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py

from lamp_bench.harness.provenance import code_commit, hash_files, package_versions
from lamp_bench.models.lamp.checkpoint import checkpoint_hash, read_config
from lamp_bench.models.training.config import TrainConfig
from lamp_bench.models.training.demos import find_demo_files

LINEAGE_FILE = "lineage.json"
DEMO_SET_MANIFEST = "demo_set.json"
LINEAGE_VERSION = 1


def _demo_file_identity(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        data = f["data"]
        meta = json.loads(data.attrs["lamp_bench"]) if "lamp_bench" in data.attrs else {}
        init_states = sorted(int(data[name].attrs.get("init_index", -1)) for name in data if name.startswith("demo_"))
    return {"path": str(path), "sha256": hash_files([path]), "suite": meta.get("suite"),
            "task_id": meta.get("task_id"), "task_name": meta.get("task_name"), "dataset": meta.get("dataset"),
            "demos": len(init_states), "init_states": init_states}


def demo_set_identity(data: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The identity of the training data: its files' hashes and what they hold."""
    files = [p for root in data for p in find_demo_files(root)]
    entries = [_demo_file_identity(p) for p in files]
    manifests = []
    for root in data:
        manifest = Path(root) / DEMO_SET_MANIFEST
        if manifest.is_file():
            manifests.append(json.loads(manifest.read_text()))
    return {
        "demo_set_hash": hash_files(files) if files else None,
        "files": entries,
        "suites": sorted({e["suite"] for e in entries if e["suite"]}),
        "collection": manifests[0] if len(manifests) == 1 else (manifests or None),
    }


def depth_identity(checkpoint: Path) -> dict[str, Any] | None:
    """Which depth the checkpoint's motion pathway lifts with; estimator weights are resolved as the
    trainer resolved them (models.lamp.depth.weights_folder)."""
    motion = read_config(checkpoint).motion
    if motion is None:
        return None
    if motion.depth.source == "sim":
        return {"source": "sim"}
    from lamp_bench.models.lamp.depth import stand_in_note, weights_folder

    folder = weights_folder(motion.depth.source)
    files = sorted(folder.glob("*.safetensors"))
    return {"source": motion.depth.source, "weights": str(folder), "weights_hash": hash_files(files) if files else None,
            "stand_in": stand_in_note(folder)}


def write_lineage(config: TrainConfig, out: Path, selection: dict[str, Any] | None = None) -> Path:
    """Write `<out>/lineage.json` for the checkpoint in `out` (atomically: a kill leaves the old one)."""
    lineage = {
        "lineage_version": LINEAGE_VERSION,
        "checkpoint": str(Path(out).resolve()),
        "checkpoint_hash": checkpoint_hash(out),
        "written_at": datetime.now(timezone.utc).isoformat(),
        "trainer": {"code_commit": code_commit(), "versions": package_versions()},
        "training_config": config.to_dict(),
        "data": demo_set_identity(config.data),
        "depth_estimator": depth_identity(out),
        "selection": selection,
    }
    path = Path(out) / LINEAGE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(lineage, indent=1, default=str))
    os.replace(tmp, path)
    return path

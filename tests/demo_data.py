"""One real oracle demonstration (LIBERO-Spatial task 0, third-person camera at 64 px), collected once per
test process and shared by test_demos, test_scene_flow and test_train."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import pytest

from lamp_bench.harness.config import LIBERO_ASSETS_ENV

ASSETS = Path(os.environ.get(LIBERO_ASSETS_ENV) or Path(__file__).resolve().parents[2] / "shared" / "assets" / "libero")
needs_libero = pytest.mark.skipif(not (ASSETS / "scenes").is_dir(), reason=f"no LIBERO asset pack at {ASSETS}")
COLLECT = dict(suite="libero_spatial", tasks=[0], episodes_per_task=1, cameras=("third_person",), image_size=64)


@functools.cache
def collected() -> tuple[Path, dict]:
    """(folder of demo files, collection summary)."""
    from lamp_bench.harness.demos import collect_demos

    root = Path(tempfile.mkdtemp(prefix="lamp-demos-"))
    atexit.register(shutil.rmtree, root, True)
    summary = collect_demos(out_dir=root, assets=ASSETS, progress=False, **COLLECT)
    return root, summary


def demo_file() -> Path:
    root, _ = collected()
    (path,) = sorted(root.rglob("*.hdf5"))
    return path


@functools.cache
def short_demo_file(steps: int = 16) -> Path:
    """The demonstration cut to its first `steps` steps (a handful of real steps for training tests)."""
    source = demo_file()
    target = Path(tempfile.mkdtemp(prefix="lamp-short-")) / "libero_spatial" / source.name
    atexit.register(shutil.rmtree, target.parent.parent, True)
    target.parent.mkdir(parents=True)
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        data = dst.create_group("data")
        data.attrs.update(dict(src["data"].attrs))

        def copy(group_in: h5py.Group, group_out: h5py.Group) -> None:
            group_out.attrs.update(dict(group_in.attrs))
            for key, item in group_in.items():
                if isinstance(item, h5py.Group):
                    copy(item, group_out.create_group(key))
                else:
                    out = group_out.create_dataset(key, data=item[:steps])
                    out.attrs.update(dict(item.attrs))

        copy(src["data/demo_0"], data.create_group("demo_0"))
        data["demo_0"].attrs["num_samples"] = steps
    return target

"""Reports whose cells sit at 0% and 100% render every format, at small and large n.

Guards an earlier bug: a 10/10 cell's Wilson upper bound computed to 1 - 1e-16, so its error bar came out
negative and matplotlib refused to draw the figure. Also how the forest plot reads a comparison's verdict."""
import base64
import re
from dataclasses import dataclass

import pandas as pd
import pytest

from lamp_bench.reports import build_report
from lamp_bench.reports.comparisons import verdict
from lamp_bench.results import stats
from lamp_bench.results.store import EpisodeStore

LIBERO = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
SIMPLER = ("PutSpoonOnTableClothInScene-v1", "PutCarrotOnPlateInScene-v1",
           "StackGreenCubeOnYellowCubeBakedTexInScene-v1", "PutEggplantInBasketScene-v1")
# label (= policy) -> every episode succeeds; two at 100% and two at 0%, so comparisons are +-100 and 0 points
ALWAYS = {"openvla": False, "no-motion": True, "steps-5": False, "lamp": True}


def record(label, suite, task_id, init_index, task_name, info):
    success = ALWAYS[label]
    return {"label": label, "policy": label, "suite": suite, "task_id": task_id, "init_index": init_index,
            "seed": 0, "task_name": task_name, "status": "success" if success else "failure", "success": success,
            "steps": 5, "finished_at": "2026-01-01T00:00:00+00:00", "checkpoint_hash": f"sha256-{label}",
            "policy_config": {"preset": "tiny"}, "info": info,
            "provenance": {"code_commit": "c0mmit", "host": "node1", "suite": {"assets": "/packs"}}}


def write_extremes(root, n: int) -> None:
    writer = EpisodeStore(root).writer()
    for label, success in ALWAYS.items():
        for init in range(n):
            for suite in LIBERO:
                writer.append(record(label, suite, 0, init, f"{suite}_0", {}))
            for task, category in enumerate(("Camera Viewpoints", "Sensor Noise")):
                writer.append(record(label, "libero_plus", task, init, f"plus_{task}",
                                     {"category": category, "difficulty_level": 1, "backend": "lamp-bench"}))
            for task, name in enumerate(SIMPLER):
                writer.append(record(label, "simpler_widowx", task, init, name,
                                     {"partial_success": success, "consecutive_grasp": success}))
    writer.close()


@pytest.mark.parametrize("n", [1, 3, 10, 50])
def test_all_success_and_all_failure_cells_render_every_format(tmp_path, n):
    write_extremes(tmp_path, n)
    out = tmp_path / "report"
    files = build_report(tmp_path, out, formats=("md", "tex", "csv", "html"))
    assert all(p.is_file() and p.stat().st_size > 0 for p in files)
    cells = pd.read_csv(out / "report.csv")
    low, high = stats.wilson_interval(n, n)
    full = cells[(cells["table"] == "libero") & (cells["row"] == "lamp") & (cells["column"] == "Spatial")].iloc[0]
    assert (full.value, full.ci_high, full.episodes) == (100.0, 100.0, n)
    assert full.ci_low == pytest.approx(100 * low) and 0 < full.ci_low < 100 and high == 1.0
    empty = cells[(cells["table"] == "libero") & (cells["row"] == "openvla") & (cells["column"] == "Average")].iloc[0]
    assert (empty.value, empty.ci_low) == (0.0, 0.0) and 0 < empty.ci_high < 100
    differences = cells[cells["kind"] == "difference"]
    assert set(differences["value"].dropna()) == {100.0, 0.0, -100.0}  # +-100 points and ties with zero-width intervals
    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert figures == sorted(["comparisons", "libero", "libero_plus", "simpler_widowx", "ablation_steps",
                              "ablation_cross_attention"])
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(figures) and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert (r"\begin{tabular}" in (out / "report.tex").read_text()) and "## LIBERO-Plus" in (out / "report.md").read_text()


@dataclass(frozen=True)
class Sequential(stats.Difference):
    """A Difference as the sequential evaluation may extend it: decided, or undecided at the budget."""

    decided: bool | None = None


@dataclass(frozen=True)
class Corrected(stats.Difference):
    """A Difference as a multiple-comparison correction may extend it."""

    p_adjusted: float | None = None


def test_verdict_prefers_decision_then_adjusted_p_then_own_test():
    plain = stats.Difference(0.2, 0.05, 0.35, paired=True, n_pairs=50, discordant=(12, 2), p_value=0.013)
    assert verdict(plain).settled and verdict(plain).text == "significant (p=0.013)"
    corrected = Corrected(**{**plain.__dict__, "p_adjusted": 0.065})
    assert not verdict(corrected).settled and verdict(corrected).text == "not significant (adjusted p=0.065)"
    assert verdict(Sequential(**{**plain.__dict__, "decided": False})).text == "undecided"
    assert verdict(Sequential(**{**plain.__dict__, "decided": True})).settled
    assert verdict(Sequential(**plain.__dict__)).text == "significant (p=0.013)"  # no decision recorded
    unpaired = stats.Difference(-0.1, -0.3, 0.1, paired=False, n_a=20, n_b=20)
    assert not verdict(unpaired).settled and verdict(unpaired).text == "interval includes 0"

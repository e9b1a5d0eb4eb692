"""The paper's experiments, defined once (LaMP, ../shared/paper/lamp.md): the suites its tables cover,
LIBERO-Plus's categories, and each table's policies and suites (with an ablation's levels).

`sweeps/paper.toml` runs these tables (a `[tables.<key>]` with `paper = true` takes its policies and
suites from here), `reports/layouts.py` lays them out, and the LIBERO-Plus suite names its categories
from here. Both harness and reports read `results`, so this is the one place both can share.
"""
from __future__ import annotations

from dataclasses import dataclass

LIBERO_SUITES = {"libero_spatial": "Spatial", "libero_object": "Object", "libero_goal": "Goal", "libero_10": "Long"}
LIBERO_PLUS_SUITE = "libero_plus"
LIBERO_PLUS_CATEGORIES = ("Objects Layout", "Camera Viewpoints", "Robot Initial States", "Language Instructions",
                          "Light Conditions", "Background Textures", "Sensor Noise")
SIMPLER_SUITE = "simpler_widowx"


@dataclass(frozen=True)
class Level:
    """One row of an ablation: the paper's name of the level and the policies that supply it (the first
    one present in the results wins)."""

    key: str  # as in reports/paper_numbers.json
    name: str  # row name in the report
    policies: tuple[str, ...]


@dataclass(frozen=True)
class PaperTable:
    key: str  # the table's name in sweeps/paper.toml, reports and reports/paper_numbers.json
    description: str
    policies: tuple[str, ...]  # the labels the paper's sweep runs for it
    suites: tuple[str, ...]
    title: str = ""
    stub: str = ""  # header of the row-name column
    columns: tuple[str, ...] = ()  # ablations: "LIBERO Avg", "LIBERO-Plus"
    levels: tuple[Level, ...] = ()  # ablations: their rows
    proposed: str | None = None  # the level of the proposed model (the reference of the comparisons)


_LIBERO = tuple(LIBERO_SUITES)
PAPER_TABLES: dict[str, PaperTable] = {t.key: t for t in (
    PaperTable("libero", "Main table: success on the four LIBERO suites", ("lamp", "openvla"), _LIBERO),
    PaperTable("libero_plus", "LIBERO-Plus out-of-distribution perturbations", ("lamp", "openvla"),
               (LIBERO_PLUS_SUITE,)),
    PaperTable("simpler_widowx", "SimplerEnv-WidowX (BridgeData tasks)", ("lamp", "openvla"), (SIMPLER_SUITE,)),
    PaperTable("ablation_steps", "Motion-expert Euler steps 0 / 1 / 5 / 10: LIBERO average and LIBERO-Plus",
               ("no-motion", "steps-1", "steps-5", "steps-10"), _LIBERO + (LIBERO_PLUS_SUITE,),
               "Ablation: motion-expert Euler steps", "Euler steps", ("LIBERO Avg", "LIBERO-Plus"),
               (Level("0", "0 (no motion prior)", ("no-motion",)), Level("1", "1 (proposed)", ("steps-1", "lamp")),
                Level("5", "5", ("steps-5",)), Level("10", "10", ("steps-10",))), "1"),
    PaperTable("ablation_cross_attention",
               "No motion prior / cross-attention without gate / gated cross-attention: LIBERO average",
               ("no-motion", "ungated", "lamp"), _LIBERO, "Ablation: cross-attention", "Cross-attention",
               ("LIBERO Avg",),
               (Level("none", "none (no motion prior)", ("no-motion",)), Level("ungated", "without gate", ("ungated",)),
                Level("gated", "gated (proposed)", ("lamp",))), "gated"),
    PaperTable("ablation_depth", "Depth estimator MiDaS / ZoeDepth / DepthAnything-V2: LIBERO average",
               ("midas", "zoedepth", "dav2"), _LIBERO, "Ablation: depth model", "Depth model", ("LIBERO Avg",),
               (Level("MiDaS", "MiDaS", ("midas",)), Level("ZoeDepth", "ZoeDepth", ("zoedepth",)),
                # only the `dav2` label: `lamp` is whatever depth its checkpoint has (the tiny preset: sim)
                Level("DAv2", "DepthAnything-V2 (proposed)", ("dav2",)),
                Level("sim", "simulator depth (diagnostic, not in the paper)", ("sim-depth",))), "DAv2"),
)}
ABLATIONS = tuple(t for t in PAPER_TABLES.values() if t.levels)


def ablation_only(table: PaperTable) -> set[str]:
    """The policies only this ablation runs (beyond the main table's): their presence calls for its section."""
    return set(table.policies) - set(PAPER_TABLES["libero"].policies)

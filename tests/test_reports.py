"""Reports from a synthetic results directory with known outcomes: exact rates, intervals and p-values,
missing/flagged cells, provenance, every output format, and the HTML page rendered by a real chromium."""
import base64
import html
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lamp_bench.reports import build_report
from lamp_bench.results import stats
from lamp_bench.results.aggregate import summary
from lamp_bench.results.store import EpisodeStore

LIBERO = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
# successful episode indices e = 10 * task_id + init_index (2 tasks x 10 initial states per suite)
LAMP = {"libero_spatial": range(18), "libero_object": range(15), "libero_goal": range(12), "libero_10": range(6)}
OPENVLA = {"libero_spatial": [*range(5, 18), 18], "libero_object": range(12), "libero_goal": range(10),
           "libero_10": range(4)}
SIMPLER = {"PutSpoonOnTableClothInScene-v1": (5, 8), "PutCarrotOnPlateInScene-v1": (4, 6),
           "StackGreenCubeOnYellowCubeBakedTexInScene-v1": (2, 5), "PutEggplantInBasketScene-v1": (7, 9)}
NOT_COMPARABLE = "asset pack has stand-ins (stages: flat slab): not comparable with published SimplerEnv results"
# recorded rollouts: (label, suite, episode index) -> video file under the results directory; the last one's
# file is never written (a record naming a video that is gone)
VIDEOS = {("lamp", "libero_spatial", 0): "videos/lamp/libero_spatial/task0_init0_seed0_success.mp4",
          ("lamp", "libero_spatial", 18): "videos/lamp/libero_spatial/task1_init8_seed0_failure.mp4",
          ("lamp", "libero_goal", 19): "videos/lamp/libero_goal/task1_init9_seed0_failure.gif",
          ("openvla", "libero_spatial", 1): "videos/openvla/libero_spatial/task0_init1_seed0_failure.mp4"}
MISSING_VIDEO = VIDEOS[("openvla", "libero_spatial", 1)]
LIBERO_PROV = {"code_commit": "c0mmit", "host": "node1", "python": "3.11.7",
               "versions": {"mujoco": "3.9.0", "robosuite": "1.4.0", "libero": "0.1.1"},
               "mujoco_warning": "MuJoCo 3.9.0 renders floors darker",
               "suite": {"suite": "libero", "assets": "/packs/libero", "assets_identity": "feedbeef",
                         "assets_stand_ins": True, "protocol": {"settle_steps": 10}}}


def record(label, policy, suite, task_id, init_index, success, seed=0, **extra):
    return {"label": label, "policy": policy, "suite": suite, "task_id": task_id, "init_index": init_index,
            "seed": seed, "task_name": extra.pop("task_name", f"{suite}_{task_id}"), "status": extra.pop(
                "status", "success" if success else "failure"), "success": success, "steps": 10,
            "finished_at": extra.pop("finished_at", "2026-01-01T00:00:00+00:00"),
            "checkpoint_hash": f"sha256-{policy}", "policy_config": {"preset": "tiny"},
            "info": extra.pop("info", {}), "provenance": extra.pop("provenance", LIBERO_PROV), **extra}


def write_results(root: Path) -> None:
    writer = EpisodeStore(root).writer()
    for label, successes in (("lamp", LAMP), ("openvla", OPENVLA)):
        for suite in LIBERO:
            for e in range(20):
                error = label == "lamp" and suite == "libero_goal" and e == 19
                video = VIDEOS.get((label, suite, e))
                writer.append(record(label, label, suite, e // 10, e % 10, e in successes[suite],
                                     info={"video": video} if video else {},
                                     **({"status": "error", "failure_reason": "env crashed"} if error else {})))
    # a later duplicate of an episode never replaces the first record
    writer.append(record("lamp", "lamp", "libero_spatial", 1, 9, True, finished_at="2026-02-01T00:00:00+00:00"))
    for init in range(5):  # too few episodes: flagged; no other suite, so no LIBERO average
        writer.append(record("steps-5", "steps-5", "libero_spatial", 0, init, init < 3))
    for e in range(20):  # other seed than openvla: nothing to pair with
        writer.append(record("ungated", "ungated", "libero_spatial", e // 10, e % 10, e < 16, seed=1))
    for task in range(20):
        info = {"category": "Camera Viewpoints" if task < 10 else "Sensor Noise",
                "difficulty_level": 1 if task % 10 < 5 else 2, "backend": "lamp-bench"}
        writer.append(record("lamp", "lamp", "libero_plus", task, 0, task in (0, 1, 2, 3, 4, 5, 10, 11, 12), info=info))
    for task in range(10):
        info = {"category": "Camera Viewpoints", "difficulty_level": 1 if task < 5 else 2, "backend": "official"}
        writer.append(record("openvla", "openvla", "libero_plus", task, 0, task < 4, info=info))
    simpler_prov = {**LIBERO_PROV, "suite": {"assets": "/packs/maniskill", "assets_stand_ins": {"stages": "flat slab"},
                                             "comparable": False, "assets_note": NOT_COMPARABLE}}
    for task, (name, (wins, grasps)) in enumerate(SIMPLER.items()):
        for init in range(10):
            info = {"partial_success": init < grasps, "consecutive_grasp": init < grasps - 1}
            writer.append(record("lamp", "lamp", "simpler_widowx", task, init, init < wins, task_name=name, info=info,
                                 provenance=simpler_prov))
    writer.close()
    with open(writer.path, "a") as f:
        f.write('{"label": "lamp", "suite": "libero_spatial", "task_id": 0, "init_in')  # torn by a kill
    profile = root / "profile"
    profile.mkdir()
    (profile / "lamp.json").write_text(json.dumps({
        "policy": "lamp", "preset": "tiny", "batch": 1, "total_ms": 50.0, "ratio_to_no_motion": 1.25,
        "components_ms": {"vision": 10.0, "depth": 5.0, "flow": 3.0, "cross_attention": 2.0, "prefill": 20.0,
                          "decode": 10.0}}))
    (profile / "no-motion.json").write_text(json.dumps({
        "policy": "no-motion", "preset": "tiny", "batch": 1, "total_ms": 40.0,
        "components_ms": {"vision": 10.0, "prefill": 20.0, "decode": 10.0}}))
    write_videos(root, [v for v in VIDEOS.values() if v != MISSING_VIDEO])


def write_videos(root: Path, paths) -> None:
    """Clips as the runner writes them: H.264 mp4 through imageio's ffmpeg plugin, else a GIF."""
    import imageio.v2 as imageio

    frames = [np.full((32, 48, 3), v, np.uint8) for v in range(0, 256, 32)]
    for relative in paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".mp4":
            imageio.mimwrite(path, frames, fps=20, macro_block_size=1)
        else:
            imageio.mimwrite(path, frames, duration=0.05)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_results(root)
    out = root / "report"
    files = build_report(root, out_dir=out, formats=("md", "tex", "csv", "html"))
    cells = pd.read_csv(out / "report.csv", keep_default_na=False, dtype=str)
    return root, out, files, cells


def _parse(text):
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text  # words, and "" for an empty field


def cell(cells, table, row, column):
    """One cell of the CSV (read as text) with numbers and booleans parsed."""
    hit = cells[(cells["table"] == table) & (cells["row"] == row) & (cells["column"] == column)]
    assert len(hit) == 1, f"no single cell {table}/{row}/{column}"
    return pd.Series({k: _parse(v) for k, v in hit.iloc[0].items()})


def pct(values):
    return [100 * float(v) for v in values]


def test_summary_counts_and_intervals(report):
    root = report[0]
    frame = summary(EpisodeStore(root).records())
    suite = frame[(frame.label == "lamp") & (frame.suite == "libero_spatial") & (frame.task_id == "all")].iloc[0]
    assert (suite.episodes, suite.successes, suite.errors, suite["success_%"]) == (20, 18, 0, 90.0)
    assert [suite["ci95_low_%"], suite["ci95_high_%"]] == [round(v, 1) for v in pct(stats.wilson_interval(18, 20))]
    tasks = frame[(frame.label == "lamp") & (frame.suite == "libero_spatial") & (frame.task_id != "all")]
    assert tasks[["task_id", "episodes", "successes"]].values.tolist() == [["0", 10, 10], ["1", 10, 8]]
    goal = frame[(frame.label == "lamp") & (frame.suite == "libero_goal") & (frame.task_id == "all")].iloc[0]
    assert (goal.successes, goal.errors) == (12, 1)
    flagged = frame[(frame.label == "steps-5") & (frame.task_id == "all")].iloc[0]
    assert (flagged.episodes, flagged.flag) == (5, "n<10")
    assert summary(EpisodeStore(root).records(), per_task=False).task_id.eq("all").all()


def test_libero_cells_paper_and_delta(report):
    cells = report[3]
    spatial = cell(cells, "libero", "lamp", "Spatial")
    assert (spatial.value, spatial.episodes, spatial.successes) == (90.0, 20, 18)
    assert [spatial.ci_low, spatial.ci_high] == pytest.approx(pct(stats.wilson_interval(18, 20)), abs=1e-9)
    average = cell(cells, "libero", "lamp", "Average")
    expected = stats.weighted_rate([18, 15, 12, 6], [20, 20, 20, 20])
    assert average.value == pytest.approx(63.75) and average.strata == 4 and average.episodes == 80
    assert [average.ci_low, average.ci_high] == pytest.approx(pct([expected.low, expected.high]))
    assert cell(cells, "libero", "lamp", "Goal").errors == 1
    assert cell(cells, "libero", "openvla", "Average").value == pytest.approx(50.0)
    assert cell(cells, "libero", "paper: LaMP (ours)", "Average").value == 77.3
    delta = cell(cells, "libero", "Δ lamp − paper LaMP (ours)", "Average")
    assert delta.value == pytest.approx(63.75 - 77.3)
    assert "outside" in delta.note  # 77.3 is above the measured interval
    assert cell(cells, "libero", "Δ openvla − paper OpenVLA-7B", "Long").value == pytest.approx(20.0 - 39.0)


def test_libero_paired_and_unpaired_differences(report):
    cells = report[3]
    spatial = cell(cells, "libero_differences", "lamp − openvla", "Spatial")
    # lamp only: episodes 0-4 (5); openvla only: episode 18 (1)
    assert spatial.value == pytest.approx(20.0) and spatial.paired is True and spatial.n_pairs == 20
    assert spatial.p_value == pytest.approx(2 * (1 + 6) / 2 ** 6)
    assert spatial.significant is False
    average = cell(cells, "libero_differences", "lamp − openvla", "Average")
    # discordant over all four suites: lamp only 5 + 3 + 2 + 2, openvla only 1
    assert average.value == pytest.approx(13.75) and average.n_pairs == 80
    assert average.p_value == pytest.approx(sps.binomtest(1, 13, 0.5).pvalue) and average.significant is True
    assert average.ci_low < 13.75 < average.ci_high
    unpaired = cell(cells, "libero_differences", "ungated − openvla", "Spatial")
    expected = stats.newcombe_difference(stats.weighted_rate([16], [20]), stats.weighted_rate([14], [20]))
    assert unpaired.paired is False and unpaired.p_value == ""
    assert [unpaired.value, unpaired.ci_low, unpaired.ci_high] == pytest.approx(pct([expected.diff, expected.low,
                                                                                   expected.high]))
    assert "unpaired" in unpaired.text
    assert cell(cells, "libero_differences", "ungated − openvla", "Average").text == "–"


def test_missing_and_flagged_cells_are_marked_never_zero(report):
    _, out, _, cells = report
    flagged = cell(cells, "libero", "steps-5", "Spatial")
    assert flagged.flagged is True and flagged.value == 60.0 and flagged.text.endswith("†")
    missing = cell(cells, "libero", "steps-5", "Object")
    assert (missing.text, missing.value, missing.note) == ("–", "", "no episodes")
    assert cell(cells, "libero", "steps-5", "Average").note == "needs libero_object, libero_goal, libero_10"
    md = (out / "report.md").read_text()
    assert "| steps-5 | 60.0 [23.1, 88.2] n=5† | – | – | – | – |" in md
    assert "– steps-5: needs libero_object, libero_goal, libero_10 (Average)" in md
    assert "fewer than 10 episodes behind Spatial" in md
    assert "lamp: 1 episode(s) ended in an error" in md


def test_libero_plus_categories_backends_and_levels(report):
    cells = report[3]
    row = "lamp [lamp-bench]"
    assert cell(cells, "libero_plus", row, "Camera Viewpoints").value == 60.0
    assert cell(cells, "libero_plus", row, "Sensor Noise").value == 30.0
    total = cell(cells, "libero_plus", row, "Total")
    assert (total.value, total.episodes) == (45.0, 20)
    assert cell(cells, "libero_plus", row, "Light Conditions").text == "–"
    assert cell(cells, "libero_plus", "openvla [official]", "Total").value == 40.0
    assert cell(cells, "libero_plus", "paper: LaMP (ours)", "Total").value == 67.7
    assert cell(cells, "libero_plus_levels", row, "level 1").value == pytest.approx(100 * 8 / 10)
    assert cell(cells, "libero_plus_levels", row, "level 2").value == pytest.approx(100 * 1 / 10)
    md = (report[1] / "report.md").read_text()
    assert "not tested against openvla [official] (another backend): lamp [lamp-bench]" in md
    assert "lamp [lamp-bench]: 20 distinct tasks of the benchmark's 10,030 (a subset" in md


def test_simpler_success_grasp_and_asset_note(report):
    _, out, _, cells = report
    assert cell(cells, "simpler_success", "lamp", "spoon").value == 50.0
    assert cell(cells, "simpler_success", "lamp", "cube (stack)").value == 20.0
    assert cell(cells, "simpler_success", "lamp", "Average").value == pytest.approx(45.0)
    assert cell(cells, "simpler_success", "paper: LaMP (ours)", "Average").value == 78.5
    assert cell(cells, "simpler_partial_success", "lamp", "eggplant").value == 90.0
    assert cell(cells, "simpler_partial_success", "lamp", "Average").value == pytest.approx(70.0)
    assert cell(cells, "simpler_consecutive_grasp", "lamp", "spoon").value == 70.0
    md = (out / "report.md").read_text()
    assert f"simpler_widowx: assets_note: {NOT_COMPARABLE}" in md
    assert "simpler_widowx: comparable with published results: NO" in md
    simpler = md[md.index("## SimplerEnv"):md.index("## Ablation")]
    assert "mujoco_warning" not in simpler  # MuJoCo's warning is about LIBERO


def test_ablations_name_levels_and_labels(report):
    cells = report[3]
    proposed = "1 (proposed): lamp"
    assert cell(cells, "ablation_steps", proposed, "LIBERO Avg").value == pytest.approx(63.75)
    assert cell(cells, "ablation_steps", proposed, "LIBERO-Plus").value == pytest.approx(45.0)
    assert cell(cells, "ablation_steps", "0 (no motion prior)", "LIBERO Avg").note == "no label of policy no-motion"
    assert cell(cells, "ablation_steps", "5: steps-5", "LIBERO Avg").text == "–"
    assert cell(cells, "ablation_steps", "paper: 10", "LIBERO-Plus").value == 67.5
    assert cell(cells, "ablation_steps", f"Δ {proposed} − paper 1 (proposed)", "LIBERO Avg").value == \
        pytest.approx(63.75 - 77.3)
    assert cell(cells, "ablation_cross_attention", "without gate: ungated", "LIBERO Avg").text == "–"
    assert cell(cells, "ablation_cross_attention", "paper: without gate", "LIBERO Avg").value == 75.8
    assert not (cells["section"] == "ablation_depth").any()  # no depth-ablation policy was run


def test_speed_table(report):
    _, out, _, cells = report
    lamp, base = "lamp (tiny, batch 1)", "no-motion (tiny, batch 1)"
    assert cell(cells, "speed", lamp, "total ms").value == 50.0
    assert cell(cells, "speed", lamp, "× no-motion").text == "1.25×"
    assert cell(cells, "speed", base, "× no-motion").value == 1.0  # computed from the no-motion profile itself
    assert cell(cells, "speed", base, "depth ms").text == "–"
    assert cell(cells, "speed", "paper: LaMP (ours)", "× no-motion").value == 1.25
    assert cell(cells, "speed", f"Δ {lamp} − paper LaMP (ours)", "× no-motion").text == "+0.00×"
    assert "no-motion (tiny, batch 1): no timing for depth, flow, cross_attention" in (out / "report.md").read_text()


def test_provenance_is_stated(report):
    md = (report[1] / "report.md").read_text()
    for text in ("sha256-lamp (", "c0mmit (", "/packs/libero", "feedbeef", "3.9.0",
                 "MuJoCo 3.9.0 renders floors darker", "hosts: node1"):
        assert text in md


FIGURES = ("comparisons", "libero", "libero_plus", "simpler_widowx", "ablation_steps", "ablation_cross_attention",
           "speed")


def test_files_figures_and_self_contained_html(report):
    root, out, files, _ = report
    names = {p.relative_to(out).as_posix() for p in files}
    assert {"report.md", "report.tex", "report.csv", "report.html"} <= names
    for key in FIGURES:
        assert (out / "figures" / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert ET.parse(out / "figures" / f"{key}.svg").getroot().tag.endswith("svg")
    page = (out / "report.html").read_text()
    assert "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    # everything else the page loads is a recorded rollout, linked relatively and present
    linked = [html.unescape(h) for h in re.findall(r'(?:src|href)="(?!data:|#)([^"]*)"', page)]
    assert sorted(linked) == sorted(f"../{v}" for v in VIDEOS.values() if v != MISSING_VIDEO)
    assert all((out / link).resolve().is_file() for link in linked)
    tex = (out / "report.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\Delta$ lamp $-$ paper LaMP (ours)" in tex
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}")


def test_forest_plot_gathers_every_comparison_of_the_tables(report):
    _, out, _, cells = report
    page = (out / "report.html").read_text()
    forest = page[page.index('<section id="s-comparisons">'):page.index('<section id="s-libero">')]
    differences = cells[(cells["kind"] == "difference") & (cells["text"] != "–")]
    assert len(differences) == 7  # lamp, ungated and steps-5 against openvla: 5 + 1 + 1 columns
    assert f"{len(differences)} comparison(s) from the differences tables below (6 paired on shared episodes, " \
           "1 unpaired); 1 settled, 6 not." in html.unescape(forest)
    assert 'alt="All comparisons at a glance figure" src="data:image/png;base64,' in forest
    assert page.index("s-comparisons") < page.index("s-libero")  # the picture first, the tables after


def test_gallery_captions_failures_and_successes(report):
    _, out, _, _ = report
    page = (out / "report.html").read_text()
    gallery = page[page.index('<section id="s-videos">'):page.index('<section id="s-provenance">')]
    figures = re.findall(r'<figure class="(\w+)">(.*?)</figure>', gallery)
    assert [outcome for outcome, _ in figures] == ["error", "failure", "success", "failure"]  # failures first
    videos = re.findall(r'<video src="([^"]+)"', gallery)
    assert videos == ["../videos/lamp/libero_spatial/task1_init8_seed0_failure.mp4",
                      "../videos/lamp/libero_spatial/task0_init0_seed0_success.mp4"]
    assert '<img src="../videos/lamp/libero_goal/task1_init9_seed0_failure.gif"' in gallery  # the GIF fallback
    # each video shows its last frame until played (the fixture's frames end at grey level 224)
    posters = re.findall(r'<video src="[^"]+" poster="([^"]+)"', gallery)
    assert posters == ["posters/lamp/libero_spatial/task1_init8_seed0_failure.jpg",
                       "posters/lamp/libero_spatial/task0_init0_seed0_success.jpg"]
    import imageio.v2 as imageio

    still = imageio.imread(out / posters[0])
    assert still.shape == (32, 48, 3) and abs(float(still.mean()) - 224) < 3
    assert {out / p for p in posters} <= set(report[2])  # build_report lists the files it wrote
    captions = [re.sub("<[^>]+>", "", html.unescape(body.split("<figcaption>")[1])) for _, body in figures]
    assert captions[1] == "failure · lamp / libero_spatial · task 1 · init 8 · seed 0libero spatial 1"
    assert captions[0].startswith("error · lamp / libero_goal · task 1 · init 9 · seed 0")
    assert f"video file missing: ../{MISSING_VIDEO}" in gallery and MISSING_VIDEO not in "".join(videos)
    md = (out / "report.md").read_text()
    assert "- lamp / libero_spatial: [task 0 · init 0 · seed 0 · success]" \
           "(../videos/lamp/libero_spatial/task0_init0_seed0_success.mp4)" in md
    assert f"task 0 · init 1 · seed 0 · failure (video file missing: ../{MISSING_VIDEO})" in md


def test_bad_input_is_named(report, tmp_path):
    root = report[0]
    with pytest.raises(ValueError, match="unknown report format.*pdf.*choose from md, tex, csv, html"):
        build_report(root, tmp_path / "a", formats="md,pdf")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no episode records.*lamp-bench run"):
        build_report(tmp_path)
    with pytest.raises(ValueError, match="baseline 'gr2' is not a label"):
        build_report(root, tmp_path / "b", baseline="gr2")
    bad = tmp_path / "bad"
    (bad / "profile").mkdir(parents=True)
    (bad / "profile" / "x.json").write_text('{"policy": "lamp"}')
    with pytest.raises(ValueError, match=r"x\.json lacks 'policy' or 'total_ms'"):
        build_report(bad)


def test_show_paper_false_and_baseline_choice(report, tmp_path):
    root = report[0]
    build_report(root, tmp_path, formats="csv", show_paper=False, baseline="ungated")
    cells = pd.read_csv(tmp_path / "report.csv", keep_default_na=False, dtype=str)
    assert not cells["kind"].isin(["paper", "delta"]).any()
    assert (cells["table"] == "libero_differences").any()
    assert set(cells.loc[cells["table"] == "libero_differences", "row"]) == {"openvla − ungated", "lamp − ungated",
                                                                           "steps-5 − ungated"}


CHROMIUM = shutil.which("chromium")
PROBE = """<script>window.addEventListener('load', () => {
  const shown = [...document.querySelectorAll('img')].map(e => {
    const r = e.getBoundingClientRect();
    return [e.alt, e.complete && e.naturalWidth > 0, Math.round(r.width), Math.round(r.height)];
  });
  const videos = [...document.querySelectorAll('video')].map(e =>
    [e.getAttribute('src'), e.readyState, e.videoWidth, e.error ? e.error.code : null]);
  document.body.setAttribute('data-rendered', JSON.stringify([shown, videos]));
});</script>"""


def chromium(*args, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    out = report[1]
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", (out / "report.html").as_uri(), tmp_path=tmp_path)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert (pixels.min(axis=2) < 0.9).mean() > 0.02  # text, tables and figures, not a blank page
    # the same page with a probe that reports every image's decoded and laid-out size once loaded
    probe = out / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), tmp_path=tmp_path).stdout
    finally:
        probe.unlink()
    images, videos = json.loads(html.unescape(re.search(r'data-rendered="([^"]*)"', dom).group(1)))
    figures = [i for i in images if i[0].endswith(" figure")]
    assert len(figures) == len(FIGURES) and figures[0][0] == "All comparisons at a glance figure"
    assert all(loaded and width > 100 and height > 100 for _, loaded, width, height in figures)
    clips = [i for i in images if not i[0].endswith(" figure")]  # the GIF rollout
    assert len(clips) == 1 and clips[0][1] and clips[0][2] > 100
    # each <video> points at a file that is there, and chromium decoded its H.264 frames (readyState >= 2)
    assert sorted(v[0] for v in videos) == sorted(f"../{v}" for v in VIDEOS.values()
                                                   if v.endswith(".mp4") and v != MISSING_VIDEO)
    assert all((out / src).resolve().is_file() for src, *_ in videos)
    assert all(ready >= 2 and width == 48 and error is None for _, ready, width, error in videos)


def test_a_label_evaluated_only_on_simplerenv_has_no_ablation_row(tmp_path):
    """A WidowX model (policy lamp, its own label) sits in the SimplerEnv table, not in LIBERO's ablations."""
    writer = EpisodeStore(tmp_path).writer()
    for suite in LIBERO:
        writer.append(record("lamp", "lamp", suite, 0, 0, True))
        writer.append(record("no-motion", "no-motion", suite, 0, 0, False))  # so that the steps ablation is laid out
    writer.append(record("lamp-widowx", "lamp", "simpler_widowx", 0, 0, True, task_name="PutSpoonOnTableClothInScene-v1"))
    writer.close()
    build_report(tmp_path, out_dir=tmp_path / "report", formats=("csv",))
    cells = pd.read_csv(tmp_path / "report" / "report.csv", keep_default_na=False, dtype=str)
    ablation_rows = set(cells.loc[cells["section"].str.startswith("ablation"), "row"])
    assert "1 (proposed): lamp" in ablation_rows and not any("lamp-widowx" in r for r in ablation_rows)
    assert "lamp-widowx" in set(cells.loc[cells["section"] == "simpler_widowx", "row"])


def test_a_depth_row_with_stand_in_weights_says_so(tmp_path):
    """Weights fitted in place of the published estimator (models.training.depth_fit) are named in the notes."""
    stand_in = {"source": "dav2", "weights_hash": "33553bb1ade3fa6c24a3", "stand_in": "tiny dav2 fitted to sim depth, NOT the published weights"}
    writer = EpisodeStore(tmp_path).writer()
    for suite in LIBERO:
        writer.append(record("sim-depth", "lamp", suite, 0, 0, True))
        writer.append(record("dav2", "dav2", suite, 0, 0, False, policy_config={"depth_estimator": stand_in}))
    writer.close()
    build_report(tmp_path, out_dir=tmp_path / "report", formats=("md",))
    text = (tmp_path / "report" / "report.md").read_text()
    depth = text[text.index("## Ablation: depth model"):]
    assert "dav2: its dav2 depth weights (hash 33553bb1ade3fa6c) are tiny dav2 fitted to sim depth, NOT the published" in depth
    assert "sim-depth: its" not in depth

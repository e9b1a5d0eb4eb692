#!/usr/bin/env bash
# The paper's tables at CPU scale from one sweep (sweeps/mini.toml): oracle demonstrations -> tiny models
# trained on them -> held-out evaluation -> report. Resumable: run it again after a kill and it goes on
# (finished steps and episodes are skipped, a killed training resumes from its last save).
#
#   bash benchmarks/mini_paper.sh                 # the full run (needs a quiet machine; timings below)
#   SWEEP=my_toy.toml WORK=/tmp/mini bash benchmarks/mini_paper.sh   # the same pipeline on another sweep file
#   TABLES=simpler_widowx WORK=... REPORT=... bash benchmarks/mini_paper.sh   # only these tables and their steps
#
# The depth-estimator row (dav2) needs DepthAnything-V2 weights ($LAMP_BENCH_DEPTH_WEIGHTS/dav2). Without
# them (DEPTH_STANDIN=1, the default) the first pass blocks dav2's cells, then a tiny DepthAnything-
# architecture estimator is fitted to the simulator depth of the sweep's own demonstrations
# (models/training/depth_fit.py, saved in the published layout with a standin.json that says what it is),
# and a second pass of the same sweep trains and evaluates dav2 with it. DEPTH_STANDIN=0 leaves them blocked.
#
# Measured on this 2-core machine, one step at a time and with exact LIBERO rendering (the previous version
# of this file): demonstrations 22 min, LIBERO trainings 67, evaluation ~70, dav2 stand-in and row ~40,
# SimplerEnv-WidowX 44; all six tables ~4.3 h. Now LIBERO renders fast (sweeps/mini.toml says why),
# independent steps run side by side (--workers) and CPU training uses the faster attention path: 140.3 min
# from nothing (demonstrations 10, the five trainings 54.5 until the last ended, 194 episodes 50, dav2 stand-in
# fit, training and 20 episodes 26; the steps' step.json times and benchmarks/results/mini_paper.json).
# Outputs: benchmarks/results/mini_paper/ (report.md, report.html, report.csv, lineage of every label,
# status.txt) and benchmarks/results/mini_paper.json (wall time of every invocation, load average, step
# and cell counts).
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate

export LAMP_BENCH_LIBERO_ASSETS="${LAMP_BENCH_LIBERO_ASSETS:-$(cd .. && pwd)/shared/assets/libero}"
export LAMP_BENCH_LIBERO_PLUS_ASSETS="${LAMP_BENCH_LIBERO_PLUS_ASSETS:-$(cd .. && pwd)/shared/assets/libero-plus}"
export LAMP_BENCH_MANISKILL_ASSETS="${LAMP_BENCH_MANISKILL_ASSETS:-$(cd .. && pwd)/shared/assets/maniskill}"
SWEEP="${SWEEP:-sweeps/mini.toml}"
WORK="${WORK:-benchmarks/results/mini_paper_work}"
[ "$SWEEP" = sweeps/mini.toml ] && default_report=benchmarks/results/mini_paper || default_report="$WORK/report"
REPORT="${REPORT:-$default_report}"  # and its summary, $REPORT.json
WORKERS="${WORKERS:-2}"
TABLES="${TABLES:-}"  # comma-separated: run only these tables of the sweep (and the steps they need)
only=(); [ -n "$TABLES" ] && only=(--tables "$TABLES")

started=$(date +%s)
load_before=$(cut -d' ' -f1 /proc/loadavg)
DEPTH_STANDIN="${DEPTH_STANDIN:-1}"
mkdir -p "$WORK/invocations"
# Wall-time accounting that survives a kill: every invocation keeps a heartbeat file in the work folder, and
# the summary adds up all of them (a killed one counts up to its last heartbeat, and says it was killed).
beat="$WORK/invocations/$started.json"
heartbeat() {
  while :; do
    printf '{"started": %s, "last_seen": %s, "load_before": %s}\n' "$started" "$(date +%s)" "$load_before" > "$beat.tmp"
    mv "$beat.tmp" "$beat"; sleep 30
  done
}
heartbeat & heartbeat_pid=$!
trap 'kill $heartbeat_pid 2>/dev/null' EXIT
STANDIN="$(cd "$WORK" && pwd)/depth-standin"  # absolute (jobs run elsewhere); holds dav2/ (a folder per depth source, as $LAMP_BENCH_DEPTH_WEIGHTS expects)
dav2_weights() { python -c "from lamp_bench.models.lamp.depth import weights_folder; print(weights_folder('dav2'))"; }
if [ "$DEPTH_STANDIN" = 1 ] && [ -z "${LAMP_BENCH_DEPTH_WEIGHTS:-}" ] && [ -f "$STANDIN/dav2/standin.json" ]; then
  export LAMP_BENCH_DEPTH_WEIGHTS="$STANDIN"  # resuming a run that fitted its stand-in already
fi

# the demonstration folders that this run's [train.dav2] step trains on (none: the run trains no dav2)
dav2_data() { python - "$SWEEP" "$WORK" "$TABLES" <<'PY'
import sys
from lamp_bench.harness.sweep import load_sweep, only_tables

sweep_file, work, tables = sys.argv[1:]
sweep = load_sweep(sweep_file)
graph = (only_tables(sweep, tables.split(",")) if tables else sweep).steps
if graph and "dav2" in graph.train:
    print(" ".join(str(graph.demos[name].folder(work)) for name in graph.train["dav2"].data))
PY
}

lamp-bench sweep "$SWEEP" --out "$WORK" --executor local --workers "$WORKERS" "${only[@]}"
sweep_rc=$?  # 1: some jobs failed for good; a blocked cell (failed training) is in the status, not here
depth_demos=$(dav2_data)
if [ "$DEPTH_STANDIN" = 1 ] && [ ! -f "$(dav2_weights)/config.json" ] && [ -n "$depth_demos" ]; then
  echo "no dav2 depth weights: fitting a tiny stand-in on dav2's demonstrations into $STANDIN/dav2"
  python -m lamp_bench.models.training.depth_fit --demos $depth_demos --out "$STANDIN/dav2" || exit $?
  export LAMP_BENCH_DEPTH_WEIGHTS="$STANDIN"
  lamp-bench sweep "$SWEEP" --out "$WORK" --executor local --workers "$WORKERS" "${only[@]}"  # resumes: dav2 is left
  sweep_rc=$?
fi
mkdir -p "$REPORT"
lamp-bench status "$WORK" > "$REPORT/status.txt" 2>&1
lamp-bench report "$WORK" --out "$REPORT" --format md,html,csv || exit $?
python - "$WORK" "$REPORT" <<'EOF'
import subprocess, sys
from lamp_bench.results.store import EpisodeStore

work, report = sys.argv[1:]
cells = sorted({(r["label"], r["suite"]) for r in EpisodeStore(work).records()})
with open(f"{report}/lineage.txt", "w") as out:
    for label, suite in cells:
        result = subprocess.run(["lamp-bench", "lineage", work, "--label", label, "--suite", suite],
                                capture_output=True, text=True)
        out.write(result.stdout + result.stderr + "\n")
EOF
kill $heartbeat_pid 2>/dev/null
python - "$WORK" "$SWEEP" "$started" "$load_before" "$sweep_rc" "$REPORT" "$TABLES" <<'EOF'
import json, os, sys, time
from pathlib import Path
from lamp_bench.harness.sweep.step_status import steps_status
from lamp_bench.results.store import EpisodeStore

work, sweep, started, load_before, rc, report, tables = sys.argv[1:]
records = EpisodeStore(work).records()
steps, flags = steps_status(work)
target = Path(report.rstrip("/") + ".json")
beats = Path(work) / "invocations"
(beats / f"{started}.json").write_text(json.dumps({"started": int(started), "ended": int(time.time()),
                                                   "load_before": float(load_before), "load_after": os.getloadavg()[0],
                                                   "episodes_after": len(records)}))
invocations = []
for beat in sorted(beats.glob("*.json"), key=lambda p: int(p.stem)):
    entry = json.loads(beat.read_text())
    end = entry["ended"] if "ended" in entry else entry["last_seen"]
    invocations.append({"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["started"])),
                        "wall_min": round((end - entry["started"]) / 60, 1), "killed": "ended" not in entry,
                        **{k: entry[k] for k in ("load_before", "load_after", "episodes_after") if k in entry}})
standin = Path(work) / "depth-standin" / "dav2" / "standin.json"
summary = {
    "sweep": sweep, "tables": tables.split(",") if tables else "all", "work": work, "machine": {"cpus": os.cpu_count()},
    "wall_min": round(sum(i["wall_min"] for i in invocations), 1),  # all invocations of this run, killed ones too
    "invocations": invocations,
    "depth_standin": json.loads(standin.read_text()) if standin.is_file() else None,
    "sweep_exit_code": int(rc),
    "steps": {s.key: {"status": s.status, "detail": s.detail} for s in steps}, "flags": flags,
    "episodes": len(records),
    "cells": {f"{l}/{s}": sum(r["success"] for r in records if (r["label"], r["suite"]) == (l, s))
              for l, s in sorted({(r["label"], r["suite"]) for r in records})},
}
target.write_text(json.dumps(summary, indent=1))
print(json.dumps({k: summary[k] for k in ("wall_min", "episodes", "steps")}, indent=1))
EOF

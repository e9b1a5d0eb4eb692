#!/usr/bin/env bash
# The paper's tables at CPU scale from one sweep (sweeps/mini.toml): oracle demonstrations -> tiny models
# trained on them -> held-out evaluation -> report. Resumable: run it again after a kill and it goes on
# (finished steps and episodes are skipped, a killed training resumes from its last save).
#
#   bash benchmarks/mini_paper.sh                 # the full run: ~2.5-3 h on 2 cores (needs a quiet machine)
#   SWEEP=my_toy.toml WORK=/tmp/mini bash benchmarks/mini_paper.sh   # the same pipeline on another sweep file
#
# Budget on this 2-core machine, from benchmarks/results/train_tiny.json (30 demos in 4.3 min with 2
# processes; 150 + 2000 steps of batch 32 in 19.4 min at 59 samples/s; ~21-27 s per 220-step episode):
#   demonstrations  40 (10 per suite; libero_10's are longer)          ~20 min
#   training        3 models x (150 + 1500 steps of batch 32) ~14 min  ~45 min (+ ~20 min for dav2 with weights)
#   selection       3 points x 2 episodes                               ~3 min
#   evaluation      154 episodes, 2 workers (libero_10 runs 520 steps)  ~60 min
# Outputs: benchmarks/results/mini_paper/ (report.md, report.html, report.csv, lineage of every label,
# status.txt) and benchmarks/results/mini_paper.json (wall time, load average, step and cell counts).
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate

export LAMP_BENCH_LIBERO_ASSETS="${LAMP_BENCH_LIBERO_ASSETS:-$(cd .. && pwd)/shared/assets/libero}"
export LAMP_BENCH_LIBERO_PLUS_ASSETS="${LAMP_BENCH_LIBERO_PLUS_ASSETS:-$(cd .. && pwd)/shared/assets/libero-plus}"
SWEEP="${SWEEP:-sweeps/mini.toml}"
WORK="${WORK:-benchmarks/results/mini_paper_work}"
REPORT="${REPORT:-benchmarks/results/mini_paper}"
WORKERS="${WORKERS:-2}"

started=$(date +%s)
load_before=$(cut -d' ' -f1 /proc/loadavg)
lamp-bench sweep "$SWEEP" --out "$WORK" --executor local --workers "$WORKERS"
sweep_rc=$?  # 1: some jobs failed for good; a blocked cell (failed training) is in the status, not here
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
python - "$WORK" "$SWEEP" "$started" "$load_before" "$sweep_rc" <<'EOF'
import json, os, sys, time
from pathlib import Path
from lamp_bench.harness.sweep.step_status import steps_status
from lamp_bench.results.store import EpisodeStore

work, sweep, started, load_before, rc = sys.argv[1:]
records = EpisodeStore(work).records()
steps, flags = steps_status(work)
summary = {
    "sweep": sweep, "work": work, "machine": {"cpus": os.cpu_count()},
    "wall_min": round((time.time() - int(started)) / 60, 1),
    "load_average_1min": {"before": float(load_before), "after": os.getloadavg()[0]},
    "sweep_exit_code": int(rc),
    "steps": {s.key: {"status": s.status, "detail": s.detail} for s in steps}, "flags": flags,
    "episodes": len(records),
    "cells": {f"{l}/{s}": sum(r["success"] for r in records if (r["label"], r["suite"]) == (l, s))
              for l, s in sorted({(r["label"], r["suite"]) for r in records})},
}
Path("benchmarks/results/mini_paper.json" if sweep.endswith("mini.toml") else f"{work}/mini_paper.json").write_text(
    json.dumps(summary, indent=1))
print(json.dumps({k: summary[k] for k in ("wall_min", "episodes", "steps")}, indent=1))
EOF

#!/usr/bin/env bash
# The embedded default, end to end through the CLI on a CPU machine: oracle demonstrations of a
# LIBERO-Spatial task (initial states 10-49), the tiny LaMP trained on them (stage 1 + stage 2), then
# the oracle, the trained LaMP and the same architecture untrained evaluated on held-out initial
# states 0-9, and the report. Sizes can be lowered for a quick look, e.g. DEMOS=2 STAGE2_STEPS=20 EVAL=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${OUT:-runs/embedded}
TASKS=${TASKS:-0}
DEMOS=${DEMOS:-30}
STAGE1_STEPS=${STAGE1_STEPS:-150}
STAGE2_STEPS=${STAGE2_STEPS:-2000}
EVAL=${EVAL:-10}
AUGMENT_SHIFT=${AUGMENT_SHIFT:-4}
mkdir -p "$OUT"
cat > "$OUT/train.toml" <<TOML
preset = "tiny"
policy = "lamp"
data = ["$OUT/demos"]
out = "$OUT/lamp-tiny"
stage = "both"
stage1_steps = $STAGE1_STEPS
stage2_steps = $STAGE2_STEPS
augment_shift = $AUGMENT_SHIFT
TOML
lamp-bench demos --suite libero_spatial --tasks "$TASKS" --episodes-per-task "$DEMOS" --init-states 10-49 \
  --noise 0.1 --out "$OUT/demos"
lamp-bench train --config "$OUT/train.toml"
lamp-bench run --suite libero_spatial --policy oracle --tasks "$TASKS" --episodes-per-task "$EVAL" --out "$OUT"
lamp-bench run --suite libero_spatial --policy lamp --checkpoint "$OUT/lamp-tiny" --tasks "$TASKS" \
  --episodes-per-task "$EVAL" --out "$OUT"
lamp-bench run --suite libero_spatial --policy sim-depth --preset tiny --label lamp-tiny-untrained \
  --tasks "$TASKS" --episodes-per-task "$EVAL" --out "$OUT"
lamp-bench report "$OUT" --format md,html
echo "report: $OUT/report/report.html"

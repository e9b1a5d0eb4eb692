"""Latency targets of the LaMP family on this CPU, written to benchmarks/results/profile.json.

Targets (preset `small`, batch 1, randomly initialised weights of the real sizes):
  * lamp / no-motion total step latency <= 1.10 (the motion pathway's overhead);
  * the motion expert (flow network) with 1 Euler step >= 8x cheaper than with 10.

    python benchmarks/profile_policies.py [--preset small] [--batch 1] [--repeats 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

from lamp_bench.harness.provenance import package_versions
from lamp_bench.models.lamp.profiling import profile_policy

OUT = Path(__file__).resolve().parent / "results" / "profile.json"
MAX_LAMP_OVERHEAD = 1.10
MIN_STEPS_SPEEDUP = 8.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    runs = {}
    for name in ("lamp", "steps-1", "steps-10"):
        runs[name] = profile_policy(name, preset=args.preset, batch=args.batch, repeats=args.repeats,
                                    threads=args.threads)
        print(f"{name}: total {runs[name]['total_ms']:.0f} ms, x{runs[name]['ratio_to_no_motion']:.3f} of no-motion, "
              f"components {runs[name]['components_ms']}")

    overhead = runs["lamp"]["ratio_to_no_motion"]
    speedup = runs["steps-10"]["components_ms"]["flow_network"] / runs["steps-1"]["components_ms"]["flow_network"]
    targets = {
        "lamp_over_no_motion": {"value": overhead, "target": f"<= {MAX_LAMP_OVERHEAD}",
                                "met": overhead <= MAX_LAMP_OVERHEAD},
        "flow_network_steps10_over_steps1": {"value": round(speedup, 2), "target": f">= {MIN_STEPS_SPEEDUP}",
                                             "met": speedup >= MIN_STEPS_SPEEDUP},
    }
    report = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "processor": platform.processor() or platform.machine(),
                    "versions": {k: package_versions()[k] for k in ("torch", "transformers")}},
        "settings": vars(args) | {"out": str(args.out)},
        "targets": targets,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, target in targets.items():
        print(f"{key}: {target['value']} (target {target['target']}): {'met' if target['met'] else 'NOT met'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

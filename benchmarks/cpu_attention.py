"""Attention kernels for CPU training, side by side: PyTorch's fused CPU kernel (flash attention for CPU,
what scaled_dot_product_attention picks by default) against the plain matmul-softmax path ("math"), at the
attention shapes of the tiny and small presets, forward and backward; then, given demonstrations, whole
training steps of the tiny preset under each (`TrainConfig.attention`). The kernels timed alone and the
whole steps need not agree (they did not on this machine: the fused kernel wins alone, the math path wins
whole steps); the trainer's default follows the whole steps.

Writes benchmarks/results/cpu_attention.json.

    python benchmarks/cpu_attention.py                      # kernels only (~1 min)
    python benchmarks/cpu_attention.py --data DEMOS --steps 40 [--flow-source icp]   # and training steps on them,
                                                                     # at 1 and 2 threads (--threads)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_attention.json"
BACKENDS = {"fused": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}
# (batch, heads, queries, keys, head dim, additive mask): the attention calls of one training micro-batch
SHAPES = {
    "tiny_llm": (32, 4, 162, 162, 32, True),  # 64 patches + byte-level prompt + proprio + 7 actions
    "tiny_vit": (32, 4, 65, 65, 32, False),  # 64 patches + a register / class token
    "tiny_bridge": (32, 4, 162, 64, 32, False),  # LLM states attending to motion states
    "small_llm": (8, 16, 352, 352, 64, True),  # 256 patches + prompt + actions
    "small_vit": (8, 6, 261, 261, 64, False),
}


def time_kernel(shape: tuple[int, int, int, int, int, bool], backend: SDPBackend, repeats: int) -> dict[str, float]:
    batch, heads, queries, keys, dim, masked = shape
    q = torch.randn(batch, heads, queries, dim, requires_grad=True)
    k = torch.randn(batch, heads, keys, dim, requires_grad=True)
    v = torch.randn(batch, heads, keys, dim, requires_grad=True)
    mask = torch.zeros(batch, 1, queries, keys).masked_fill(
        torch.ones(queries, keys, dtype=torch.bool).triu(1), float("-inf")) if masked else None
    forward, backward = [], []
    with sdpa_kernel([backend]):
        for _ in range(repeats + 1):  # the first call warms up
            started = time.perf_counter()
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            middle = time.perf_counter()
            out.sum().backward()
            forward.append(middle - started)
            backward.append(time.perf_counter() - middle)
    return {"forward_ms": 1000 * sorted(forward[1:])[repeats // 2], "backward_ms": 1000 * sorted(backward[1:])[repeats // 2]}


def time_training(data: list[str], attention: str, steps: int, flow_source: str, threads: int, warmup: int = 5) -> float:
    """Seconds per optimizer step after `warmup` steps (setup, label caches and first-call costs left out)."""
    from lamp_bench.models.training.config import TrainConfig
    from lamp_bench.models.training.loop import train

    out = Path(tempfile.mkdtemp(prefix=f"cpu_attention_{attention}_"))
    marks: dict[int, float] = {}
    try:
        config = TrainConfig(data=tuple(data), out=str(out), policy="lamp", preset="tiny", stage="2",
                             stage2_steps=warmup + steps, batch_size=32, augment_shift=4, attention=attention,
                             flow_source=flow_source, threads=threads, progress=False,
                             save_every=10 * (warmup + steps))
        train(config, on_step=lambda run, stage, step: marks.__setitem__(step, time.perf_counter()))
        return (marks[warmup + steps] - marks[warmup]) / steps
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--data", nargs="*", default=[], help="demonstration folders (for whole training steps)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per attention setting")
    parser.add_argument("--flow-source", default="sim", help="scene-flow labels: sim (LIBERO demos) or icp")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="torch threads for the training steps")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "load_average_before": os.getloadavg()[0], "statistic": "median of --repeats calls", "kernels": {}}
    for name, shape in SHAPES.items():
        row = {backend: time_kernel(shape, kernel, args.repeats) for backend, kernel in BACKENDS.items()}
        fused, math = (sum(row[b].values()) for b in ("fused", "math"))
        row["math_speedup_forward_backward"] = round(fused / math, 2)
        result["kernels"][name] = row
        print(f"{name:12s} fused {fused:7.1f} ms  math {math:7.1f} ms  -> math {fused / math:.2f}x")
    if args.data:
        result["training_tiny"] = {"steps_timed": args.steps, "data": args.data, "flow_source": args.flow_source,
                                   "statistic": "seconds per optimizer step after 5 warm-up steps", "by_threads": {}}
        for threads in args.threads:
            seconds = {attention: time_training(args.data, attention, args.steps, args.flow_source, threads)
                       for attention in ("fused", "math")}
            seconds["fused_again"] = time_training(args.data, "fused", args.steps, args.flow_source, threads)  # drift
            fused = (seconds["fused"] + seconds["fused_again"]) / 2
            result["training_tiny"]["by_threads"][str(threads)] = {"s_per_step": seconds,
                                                                   "math_speedup": round(fused / seconds["math"], 2)}
            print(f"tiny training step, {threads} thread(s): fused {fused:.3f} s (mean of two runs), "
                  f"math {seconds['math']:.3f} s -> math {fused / seconds['math']:.2f}x")
    result["load_average_after"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

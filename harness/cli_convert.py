"""`lamp-bench convert`: an OpenVLA checkpoint in its Hugging Face layout -> a lamp-bench checkpoint.

Not needed to evaluate one (`--checkpoint HF_DIR` maps the folder in memory at every load); converting
once saves the mapping at each start and gives a folder training's `init_checkpoint` and every command
read the same way. The source dtype is kept (OpenVLA-7B's bf16: about 15 GB, not 30) and the weights are
sharded as transformers does.
"""
from __future__ import annotations

import re
from pathlib import Path

import typer

from lamp_bench.harness.cli import app, console, user_errors
from lamp_bench.harness.config import ConfigError

# transformers' units: decimal KB/MB/GB, binary KiB/MiB/GiB
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """"5GB", "500MB", "2GiB", "1000" -> bytes (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in SIZE_UNITS or float(match.group(1)) * SIZE_UNITS[unit] < 1:
        raise ConfigError(f"--max-shard-size {text!r}: expected a positive size such as 5GB, 500MB, 2GiB or a "
                          "number of bytes")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


@app.command()
@user_errors
def convert(
    hf_dir: Path = typer.Argument(..., help="OpenVLA checkpoint folder (openvla/openvla-7b layout)"),
    out: Path = typer.Argument(..., help="new folder for the lamp-bench checkpoint"),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size",
                                       help="largest weights file (5GB, 500MB, 2GiB, or bytes), as transformers"),
) -> None:
    """Write an OpenVLA HF checkpoint as a lamp-bench checkpoint (dtype kept, sharded weights);
    `--checkpoint` also takes the HF folder directly."""
    from lamp_bench.models.openvla.hf_checkpoint import convert_openvla

    limit = parse_size(max_shard_size)
    path = convert_openvla(hf_dir, out, max_shard_size=limit)
    console.print(f"lamp-bench checkpoint written to {path}; evaluate with "
                  f"`lamp-bench run --policy openvla --checkpoint {path} --suite ...`", highlight=False)

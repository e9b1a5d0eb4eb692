"""`lamp-bench serve`: serve a registered policy over openpi's or vla-eval's websocket protocol."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lamp_bench.harness.cli import app, console, policy_kwargs, suite_kwargs, user_errors
from lamp_bench.harness.config import ConfigError


def _extra_kwargs(text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--kwargs must be a JSON object like '{{\"device\": \"cuda\"}}': {error}") from None
    if not isinstance(value, dict):
        raise ConfigError("--kwargs must be a JSON object (keyword arguments of the policy)")
    return value


@app.command()
@user_errors
def serve(
    policy: str = typer.Option(..., "--policy", help="policy name (see `lamp-bench list`)"),
    protocol: str = typer.Option(..., "--protocol", help="openpi | vla-eval"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint directory"),
    preset: Optional[str] = typer.Option(None, "--preset", help="model preset when no checkpoint is given"),
    kwargs: Optional[str] = typer.Option(None, "--kwargs", help="more policy keyword arguments, a JSON object"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; anything but 127.0.0.1 needs --api-key"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="port (0: any free port, printed)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="LAMP_BENCH_API_KEY",
                                          help="clients must send `Authorization: Api-Key KEY` (vla-eval: or "
                                               "api_key in the hello)"),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="observations per forward pass (1: no batching)"),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0.0,
                                      help="how long the first observation of a batch waits for others"),
    camera: Optional[Path] = typer.Option(None, "--camera", help="camera calibration file (JSON/TOML, per role)"),
    camera_from_suite: Optional[str] = typer.Option(None, "--camera-from-suite",
                                                    help="use this suite's camera geometry (e.g. libero_spatial)"),
    camera_from_client: bool = typer.Option(False, "--camera-from-client",
                                            help="every request carries lamp/intrinsics (lamp-bench's own client)"),
    assets: Optional[Path] = typer.Option(None, "--assets", help="asset folder of --camera-from-suite's suite"),
    dataset: str = typer.Option("", "--dataset", help="action-statistics key for requests that name none"),
) -> None:
    """Serve a policy to robots and other harnesses (openpi or vla-eval protocol); Ctrl-C stops it."""
    from lamp_bench.harness.registry import POLICIES, SUITES, load_builtin_entries
    from lamp_bench.harness.remote.cameras import CameraGeometry, geometry_from_suite, load_camera_file
    from lamp_bench.harness.remote.server import PolicyServer, ServeConfig, run_server

    load_builtin_entries()
    POLICIES.check(policy)
    if camera is not None and camera_from_suite is not None:
        raise ConfigError("give one of --camera FILE and --camera-from-suite NAME, not both")
    config = ServeConfig(protocol=protocol, host=host, port=port, api_key=api_key, max_batch=max_batch,
                         max_wait_ms=max_wait_ms, dataset=dataset, camera_from_client=camera_from_client)
    config.validate()  # before loading a model: bad flags fail fast
    built = POLICIES.build(policy, **{**policy_kwargs(checkpoint, preset, policy), **_extra_kwargs(kwargs)})
    if camera is not None:
        geometry = load_camera_file(camera)
    elif camera_from_suite is not None:
        SUITES.check(camera_from_suite)
        geometry = geometry_from_suite(camera_from_suite, built.needs, suite_kwargs(assets))
    else:
        geometry = CameraGeometry()
    try:
        server = PolicyServer(built, config, geometry)
    except ConfigError:
        built.close()
        raise
    ready = lambda url: console.print(f"serving {policy} over {protocol} on {url} "
                                      f"(max batch {max_batch}, max wait {max_wait_ms} ms)", highlight=False)
    run_server(server, on_ready=ready)
    console.print("server stopped", highlight=False)

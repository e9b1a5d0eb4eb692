"""Policies: the LaMP family, its baselines and ablations, and the privileged scripted oracle.

Entries are declared lazily (no torch import until a policy is built)."""
from lamp_bench.harness.registry import POLICIES

_LAMP = "lamp_bench.models.lamp.policies"
_ORACLE = "lamp_bench.models.oracle.policies"
for _name, _module, _description in [
    ("oracle", _ORACLE, "privileged scripted pick-and-place policy (reads simulator state)"),
    ("noop", _ORACLE, "does nothing (holds still, gripper open): harness overhead baseline"),
    ("lamp", _LAMP, "LaMP: OpenVLA-style action expert + 1-step flow-matching motion expert, gated cross-attention"),
    ("openvla", _LAMP, "OpenVLA-style action expert alone (the baseline)"),
    ("no-motion", _LAMP, "LaMP with the motion pathway off (ablation: 0 Euler steps)"),
    ("ungated", _LAMP, "LaMP with cross-attention but no gate (ablation)"),
    ("steps-1", _LAMP, "LaMP, motion expert with 1 Euler step (ablation)"),
    ("steps-5", _LAMP, "LaMP, motion expert with 5 Euler steps (ablation)"),
    ("steps-10", _LAMP, "LaMP, motion expert with 10 Euler steps (ablation)"),
    ("midas", _LAMP, "LaMP with MiDaS (DPT) depth (ablation)"),
    ("zoedepth", _LAMP, "LaMP with ZoeDepth depth (ablation)"),
    ("dav2", _LAMP, "LaMP with DepthAnything-V2 depth (ablation; the paper's default)"),
    ("remote", "lamp_bench.harness.remote.client_policy", "a policy served over openpi's or vla-eval's websocket protocol (--server, --protocol)"),
    ("sim-depth", _LAMP, "LaMP with the simulator's true depth (diagnostic)"),
]:
    POLICIES.register_lazy(_name, _module, _description)

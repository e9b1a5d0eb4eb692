"""Benchmarks behind the suite interface. Entries are declared lazily (no simulator import)."""
from lamp_bench.harness.registry import SUITES

for _name, _module, _description in [
    ("libero_spatial", "lamp_bench.suites.libero", "LIBERO-Spatial: 10 tasks, same objects, different layouts (220 steps)"),
    ("libero_object", "lamp_bench.suites.libero", "LIBERO-Object: 10 pick-and-place tasks over different objects (280 steps)"),
    ("libero_goal", "lamp_bench.suites.libero", "LIBERO-Goal: 10 tasks, same scene, different goals (300 steps)"),
    ("libero_10", "lamp_bench.suites.libero", "LIBERO-Long (libero_10): 10 long-horizon tasks (520 steps)"),
    ("libero_90", "lamp_bench.suites.libero", "LIBERO-90: 90 tasks, for training data (400 steps)"),
    ("libero_plus", "lamp_bench.suites.libero_plus", "LIBERO-Plus: 10,030 OOD-perturbed LIBERO tasks in 7 categories"),
    ("simpler_widowx", "lamp_bench.suites.simpler_widowx", "SimplerEnv-WidowX: 4 BridgeData tasks on ManiSkill3"),
]:
    SUITES.register_lazy(_name, _module, _description)

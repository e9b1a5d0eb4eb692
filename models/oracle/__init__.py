"""The scripted oracles: `policies` (the privileged `oracle` policy and the `noop` baseline), `base` (what the
scripts share: action conventions, configuration, the per-robot registry and the phase state machine), and one
script per robot, imported on first use: `panda` (LIBERO; with `panda_articulation` for drawers and knobs and
`panda_hand` for the hand's geometry) and `widowx` (SimplerEnv-WidowX)."""
from lamp_bench.models.oracle.base import (
    CLOSE,
    NOOP_ACTION,
    OPEN,
    OracleConfig,
    PhaseScript,
    Script,
    register_script,
    script_for,
)
from lamp_bench.models.oracle.policies import NoopPolicy, OraclePolicy

__all__ = ["CLOSE", "NOOP_ACTION", "OPEN", "NoopPolicy", "OracleConfig", "OraclePolicy", "PhaseScript", "Script",
           "register_script", "script_for"]

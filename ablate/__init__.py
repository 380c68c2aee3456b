"""negdb.ablate: sign-specific interventions on MLP pre-activations of neuron sets."""

from negdb.ablate.interventions import (
    ACT_MODES,
    MODES,
    PREACT_MODES,
    Intervention,
    apply,
    cumulative,
    layer_groups,
    restrict,
)

__all__ = ["ACT_MODES", "MODES", "PREACT_MODES", "Intervention", "apply", "cumulative", "layer_groups", "restrict"]

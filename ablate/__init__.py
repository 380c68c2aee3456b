"""negdb.ablate: sign-specific interventions on MLP pre-activations of neuron sets."""

from negdb.ablate.interventions import (
    ACT_MODES,
    INTERVENTIONS,
    MODES,
    PREACT_MODES,
    Intervention,
    apply,
    cumulative,
    get_intervention,
    layer_groups,
    make_intervention,
    modes,
    register_intervention,
    restrict,
)

__all__ = ["ACT_MODES", "INTERVENTIONS", "MODES", "PREACT_MODES", "Intervention", "apply", "cumulative",
           "get_intervention", "layer_groups", "make_intervention", "modes", "register_intervention", "restrict"]

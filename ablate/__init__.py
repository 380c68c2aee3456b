"""negdb.ablate: sign-specific interventions on MLP pre-activations of neuron sets."""

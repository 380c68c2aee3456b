"""Dose-response and robustness sweeps of sign-specific ablations (``negdb sweep``)."""

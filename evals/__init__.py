"""negdb.evals: benchmark definitions (data), loaders and log-likelihood scoring."""

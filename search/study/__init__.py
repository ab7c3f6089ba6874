"""Studies: search spaces, creation and loading (sampler, pruner, metadata), the survey baselines."""

"""Workers: the Optuna objective, the trial loop, budget and retries, progress, and the supervisor."""

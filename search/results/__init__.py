"""What a study produced: status tables, exported configs, retraining and evaluation."""

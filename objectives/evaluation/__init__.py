"""Using and judging trained models: predicting image files, measuring a saved model on labelled
images (bootstrap intervals, the images it already saw), where it looks (Grad-CAM overlays), and
ranking backbones by how well their frozen features suit the data before training (LogME,
linear probes). Importing this package does not import Keras."""

from ._evaluate import (SEEN_IMAGES_KEY, Evaluation, Measurement, SeenImages, evaluate_model, final_model_seen_images,
                        measure_files, open_labeled, seen_image_hashes, seen_images)
from ._explain import (ExplainError, Explanation, check_images, colourise, default_target_layer, example_overlays,
                       example_rows, explain_files, grad_cam, overlay, overlay_paths, png_bytes,
                       png_data_uri, OVERLAY_PNG_KIND)
from ._predict import predict_files, predict_probabilities
from ._transferability import (CandidateScore, linear_probe_score, logme_score, rank_candidates, ranking_table,
                               score_candidate, shortlist)

__all__ = [
    "OVERLAY_PNG_KIND",
    "CandidateScore",
    "Evaluation",
    "ExplainError",
    "Explanation",
    "Measurement",
    "SEEN_IMAGES_KEY",
    "SeenImages",
    "check_images",
    "colourise",
    "default_target_layer",
    "evaluate_model",
    "example_overlays",
    "example_rows",
    "explain_files",
    "final_model_seen_images",
    "grad_cam",
    "linear_probe_score",
    "logme_score",
    "measure_files",
    "open_labeled",
    "overlay",
    "overlay_paths",
    "png_bytes",
    "png_data_uri",
    "predict_files",
    "predict_probabilities",
    "rank_candidates",
    "ranking_table",
    "score_candidate",
    "seen_image_hashes",
    "seen_images",
    "shortlist",
]

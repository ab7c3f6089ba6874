"""The model card renders every fact it is given, in the sections of Mitchell et al. (2019), with
prompts where only the owner can answer and a CLAIM coverage table; missing facts say so."""

from __future__ import annotations

import re

from medsweep.search._model_card import CLAIM_ITEMS, NOT_RECORDED, render_model_card

FACTS = {
    "model": {"file": "brain.keras", "created": "2026-11-30", "backbone": "MobileNet", "image_size": 224,
              "weights": "imagenet", "class_names": ["no", "yes"],
              "config": {"backbone": "MobileNet", "learning_rate": 0.0001, "epochs": 20, "augmentation": True}},
    "data": {"location": "/data/brain_mri", "fingerprint": {"content_hash": "ab12cd34", "file_count": 253},
             "counts": {"no": 98, "yes": 155}, "groups": "251 groups, 2 duplicate pairs kept in one fold",
             "split": "51 images locked as test (20%), 5-fold stratified group CV on the other 202"},
    "search": {"study": "brain", "objective": "auc", "direction": "maximize", "sampler": "TPE", "pruner": "median",
               "budget": {"n_trials": 50, "timeout": None}, "trials": {"complete": 41, "pruned": 8, "failed": 1},
               "selected_trial": 17, "within_noise": 7,
               "space": {"learning_rate": "1e-5 to 1e-2, log", "epochs": "[5, 10, 20]"}},
    "cv": {"metric": "auc", "mean": 0.93, "ci95": [0.907, 0.953], "folds": [0.91, 0.95, 0.92, 0.94, 0.93],
           "method": "corrected resampled t (Nadeau & Bengio 2003)"},
    "test": {"images": 51, "measured_at": "2026-11-30T12:00:00+00:00", "counts": {"no": 20, "yes": 31},
             "metrics": {"auc": 0.7291, "brier": 0.2012, "ece": 0.1034, "n": 51, "confusion_matrix": [[14, 6], [9, 22]]},
             "ci95": {"auc": [0.579, 0.86], "brier": [0.15, 0.25]}},
    "threshold": {"value": 0.4123, "target_specificity": 0.9, "chosen_on": "the mean over 5 validation folds of trial 17"},
    "calibration": {"method": "temperature scaling (Guo et al. 2017), fitted on validation outputs only",
                    "temperature": 1.84, "binning": "10 equal-width bins over [0, 1]",
                    "validation": {"before": {"brier": 0.18, "ece": 0.12}, "after": {"brier": 0.16, "ece": 0.04}},
                    "test": {"before": {"brier": 0.2012, "ece": 0.1034}, "after": {"brier": 0.19, "ece": 0.06}}},
    "explanation": {"method": "Grad-CAM", "where": "report.html, best trial's validation images"},
    "versions": {"medsweep": "0.1.0", "keras": "3.15.1", "tensorflow": "2.21.0"},
}

MITCHELL_SECTIONS = ["Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
                     "Quantitative analyses", "Ethical considerations", "Caveats and recommendations"]


def test_card_has_the_mitchell_sections_in_order_and_the_claim_table() -> None:
    card = render_model_card(FACTS)
    headings = re.findall(r"^## (.+)$", card, flags=re.MULTILINE)
    assert headings == MITCHELL_SECTIONS + ["CLAIM checklist coverage"]
    claim_rows = re.findall(r"^\| (\d+) \|", card, flags=re.MULTILINE)
    assert [int(n) for n in claim_rows] == list(range(1, 43)) == [n for n, _, _ in CLAIM_ITEMS]
    assert re.search(r"^\| 36 \| Estimates of diagnostic accuracy .* \| filled by medsweep \|", card, re.MULTILINE)
    assert re.search(r"^\| 14 \| Definition of the ground truth .* \| left to the owner \|", card, re.MULTILINE)


def test_card_carries_every_figure_it_was_given() -> None:
    card = render_model_card(FACTS)
    for text in ("253 files", "`ab12cd34`", "no: 98, yes: 155", "2 duplicate pairs", "51 images locked",
                 "41 complete, 8 pruned, 1 failed", "trial 17", "7 trials within noise of the best",
                 "0.930 [0.907, 0.953] over 5 folds", "| auc | 0.729 [0.579, 0.860] |", "| ece | 0.103 |",
                 "[[14, 6], [9, 22]]", "threshold 0.4123 for specificity 0.9", "temperature 1.840",
                 "| test | 0.2012 | 0.19 | 0.1034 | 0.06 |", "| learning_rate | 0.0001 |", "n_trials 50",
                 "keras 3.15.1", "ImageNet weights", "Grad-CAM overlays", "no: 20, yes: 31"):
        assert text in card, text
    assert NOT_RECORDED not in card
    assert card.count("_To be completed by the model's owner") == 6


def test_owner_text_replaces_prompts_and_missing_facts_say_not_recorded() -> None:
    card = render_model_card({**FACTS, "intended_use": "Research only: triage of brain MRI slices.",
                              "limitations": "Trained on one public data set."})
    assert "Research only: triage" in card and "Trained on one public data set." in card
    assert card.count("_To be completed by the model's owner") == 4
    bare = render_model_card({})
    assert bare.startswith("# Model card: medsweep model")
    assert NOT_RECORDED in bare and "No locked test set was measured" in bare
    assert "Not recalibrated" in bare


def test_card_facts_from_a_real_dataset_export_document_and_study(tmp_path, image_folder) -> None:
    import optuna

    from medsweep.objectives.evaluation import SEEN_IMAGES_KEY, final_model_seen_images, open_labeled, seen_images
    from medsweep.objectives.images import DataSpec, ImageDataset
    from medsweep.search._model_card import card_facts, search_facts
    from medsweep.search.study._study import StudySettings

    spec = DataSpec(str(image_folder), cv=2, test_fraction=0.25, split_seed=0)
    dataset = ImageDataset.open(spec)
    space = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "epochs": [1, 2], "backbone": "MobileNet"}
    settings = StudySettings(spec, dataset.fingerprint, space, "auc", "maximize", "median")
    study = optuna.create_study(direction="maximize")
    for state, value in ((optuna.trial.TrialState.COMPLETE, 0.8), (optuna.trial.TrialState.COMPLETE, 0.9),
                         (optuna.trial.TrialState.PRUNED, None), (optuna.trial.TrialState.FAIL, None)):
        study.add_trial(optuna.trial.create_trial(state=state, value=value))
    document = {"config": {"backbone": "MobileNet", "image_size": None, "weights": "none"},
                "objective": {"metric": "auc", "direction": "maximize", "value": 0.9}, "study": "tiny", "trial": 1,
                "cv": {"mean": 0.9, "ci95": [0.8, 1.0], "folds": [0.85, 0.95], "method": "corrected resampled t"},
                "test": {"images": 6, "measured_at": "2026-11-30T12:00:00+00:00", "metrics": {"auc": 0.75}, "ci95": {}}}
    metadata = {"class_names": ["abdomen", "chest x-ray"], "fingerprint": dataset.fingerprint,
                "trained_on": str(image_folder), "versions": {"medsweep": "0.1.0"}}
    facts = card_facts(document, metadata, model_file="tiny.keras", dataset=dataset,
                       search=search_facts(study, settings, within_noise=1))
    assert facts["data"]["counts"] == {"abdomen": 12, "chest x-ray": 12}
    assert facts["test"]["counts"] == {"abdomen": 3, "chest x-ray": 3}
    assert facts["search"]["trials"] == {"complete": 2, "pruned": 1, "failed": 1}
    assert facts["search"]["selected_trial"] == 1 and facts["model"]["image_size"] == 224
    card = render_model_card(facts)
    for text in ("18 images for search, 6 locked as test, 2-fold cross-validation", "0.0001 to 0.01, log scale",
                 "one of 1, 2", "fixed MobileNet", "1 trial within noise of the best", "sampler TPESampler",
                 "abdomen: 12, chest x-ray: 12", "6 images (abdomen: 3, chest x-ray: 3)", "0.900 [0.800, 1.000]"):
        assert text in card, text
    # The images train --final would record: every development image trained it, and with
    # cross-validation every one of them was also validated on; the test images stay unseen.
    recorded = final_model_seen_images(dataset)
    assert len(recorded["trained"]) == 18 and set(recorded["selected"]) == set(recorded["trained"])
    seen = seen_images({SEEN_IMAGES_KEY: recorded}, open_labeled(image_folder, ["abdomen", "chest x-ray"]))
    assert (seen.trained, seen.selected, len(seen.unseen)) == (18, 0, 6)

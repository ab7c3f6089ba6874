"""The model card `train --final` writes beside the model (MODEL.card.md).

Sections follow "Model Cards for Model Reporting" (Mitchell et al., FAT* 2019): model details,
intended use, factors, metrics, evaluation data, training data, quantitative analyses, ethical
considerations, caveats and recommendations. A last table says which items of CLAIM, the Checklist
for Artificial Intelligence in Medical Imaging (Mongan, Moy & Kahn, Radiology: AI 2020; 42 items),
the card fills from what medsweep recorded and which are left to the model's owner.

`render_model_card(facts)` is pure: every figure comes from `facts`, a dict with these optional keys
(a missing one prints "not recorded"):
  model:       file, created, backbone, image_size, weights, class_names, config (TrialConfig dict)
  data:        location, fingerprint {content_hash, file_count, class_names}, counts {class: images},
               groups (text: groups and duplicates), split (text: how the images were partitioned)
  search:      study, space {parameter: spec}, budget (text or {n_trials, timeout}), trials
               {complete, pruned, failed}, objective, direction, sampler, pruner, selected_trial,
               within_noise (number of trials not distinguishable from the selected one), selected_how
               (text: how the exported trial was chosen; default "the best by the objective")
  cv:          metric, mean, ci95 [low, high], folds [..], method
  test:        images, measured_at, metrics {name: value}, ci95 {name: [low, high]}, counts {class: images}
  threshold:   value, target_specificity, chosen_on
  calibration: temperature, method, binning, validation/test {before, after: {brier, ece}}
  explanation: method (e.g. "Grad-CAM"), where (e.g. "report.html, validation images")
  warnings:    [text]: what a reader must not miss (constant outputs, one class for every image,
               a calibration left at T = 1), shown above everything else
  versions:    {package: version}
  intended_use, limitations: text the owner wrote (left as prompts when absent)."""

from __future__ import annotations

from typing import Any, Mapping

NOT_RECORDED = "not recorded"
_TO_FILL = "_To be completed by the model's owner: {what}_"

# CLAIM 2020 items: (number, short name, who fills it here: "card", "partly" or "owner").
CLAIM_ITEMS: tuple[tuple[int, str, str], ...] = (
    (1, "Identification as an AI study, category of technology", "owner"),
    (2, "Structured summary", "owner"),
    (3, "Scientific and clinical background, intended use and clinical role", "owner"),
    (4, "Study objectives and hypotheses", "owner"),
    (5, "Prospective or retrospective study", "owner"),
    (6, "Study goal (model creation, feasibility, ...)", "partly"),
    (7, "Data sources", "partly"),
    (8, "Eligibility criteria", "owner"),
    (9, "Data pre-processing steps", "card"),
    (10, "Selection of data subsets", "card"),
    (11, "Definitions of data elements", "owner"),
    (12, "De-identification methods", "owner"),
    (13, "Handling of missing data", "partly"),
    (14, "Definition of the ground truth reference standard", "owner"),
    (15, "Rationale for the reference standard", "owner"),
    (16, "Source of ground-truth annotations, annotators' qualifications", "owner"),
    (17, "Annotation tools", "owner"),
    (18, "Inter- and intra-rater variability", "owner"),
    (19, "Intended sample size and how it was determined", "owner"),
    (20, "How data were assigned to partitions, proportions", "card"),
    (21, "Level at which partitions are disjoint", "card"),
    (22, "Detailed model description", "card"),
    (23, "Software libraries, frameworks and packages", "card"),
    (24, "Initialization of model parameters", "card"),
    (25, "Training approach, augmentation, hyperparameters, number of models trained", "card"),
    (26, "Method of selecting the final model", "card"),
    (27, "Ensembling techniques", "card"),
    (28, "Metrics of model performance", "card"),
    (29, "Statistical measures of significance and uncertainty", "card"),
    (30, "Robustness or sensitivity analysis", "partly"),
    (31, "Methods for explainability or interpretability", "partly"),
    (32, "Validation or testing on external data", "owner"),
    (33, "Flow of participants or cases", "partly"),
    (34, "Demographic and clinical characteristics of cases per partition", "owner"),
    (35, "Performance metrics of the final model on all data partitions", "card"),
    (36, "Estimates of diagnostic accuracy and their precision (95% CI)", "card"),
    (37, "Failure analysis of incorrectly classified cases", "partly"),
    (38, "Study limitations, bias, uncertainty, generalizability", "owner"),
    (39, "Implications for practice, intended use, clinical role", "owner"),
    (40, "Registration number and registry", "owner"),
    (41, "Where the full study protocol can be accessed", "owner"),
    (42, "Sources of funding and other support", "owner"),
)
_WHERE = {
    3: "Intended use (prompt)", 8: "Training data (prompt)", 12: "Training data (prompt)",
    14: "Training data (prompt)", 16: "Training data (prompt)", 32: "Evaluation data (prompt)",
    38: "Caveats (prompt)", 39: "Intended use (prompt)", 6: "Model details", 7: "Training data (location only)", 9: "Training data",
    10: "Training data", 13: "Training data (unreadable images are refused)", 20: "Training data",
    21: "Training data", 22: "Model details", 23: "Model details", 24: "Model details", 25: "Training data",
    26: "Quantitative analyses", 27: "Model details", 28: "Metrics", 29: "Metrics", 30: "Quantitative analyses (ties)",
    31: "Caveats (saliency)", 33: "Evaluation data (counts only)", 35: "Quantitative analyses",
    36: "Quantitative analyses", 37: "Caveats (report's error rows)",
}
_STATUS = {"card": "filled by medsweep", "partly": "partly filled", "owner": "left to the owner"}


def _value(value: Any, digits: int = 3) -> str:
    if value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(interval: Any) -> str:
    if not interval or len(interval) != 2 or interval[0] is None or interval[1] is None:
        return ""
    return f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def _section(facts: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = facts.get(name)
    return section if isinstance(section, Mapping) else {}


def _cell(value: Any) -> str:
    # Four significant digits keep a learning rate of 1e-4 readable where 3 decimals would show 0.000.
    text = f"{value:.4g}" if isinstance(value, float) else _value(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _model_details(facts: Mapping[str, Any]) -> list[str]:
    model, versions = _section(facts, "model"), _section(facts, "versions")
    config = model.get("config") or {}
    weights = model.get("weights", config.get("weights"))
    lines = ["## Model details", "",
             f"- File: `{_value(model.get('file'))}`, created {_value(model.get('created'))}, by medsweep "
             f"{_value(versions.get('medsweep'))}.",
             f"- Type: image classifier (model creation); transfer learning from a keras.applications "
             f"{_value(model.get('backbone', config.get('backbone')))} backbone, global average pooling, a dense "
             "layer with dropout and a sigmoid (two classes) or softmax output; " + _ensembling(model.get("ensemble")) + ".",
             f"- Input: RGB images resized to {_value(model.get('image_size', config.get('image_size')))} px, "
             "0-255, preprocessed inside the model.",
             f"- Classes: {', '.join(model.get('class_names') or []) or NOT_RECORDED}.",
             f"- Initialisation: {'ImageNet weights' if weights == 'imagenet' else _value(weights)} "
             "for the backbone, random for the head.",
             "- Software: " + (", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or NOT_RECORDED) + "."]
    if config:
        lines += ["", "Configuration (the exported TrialConfig):", ""]
        # image_size None means the backbone's default, the size the Input line above names.
        lines += _table(("parameter", "value"), [
            (k, f"{model.get('image_size')} (the backbone's default)" if k == "image_size" and v is None
             and model.get("image_size") is not None else v) for k, v in config.items()])
    return lines


def _ensembling(ensemble: Any) -> str:
    if not isinstance(ensemble, dict) or not ensemble.get("members"):
        return "no ensembling"
    auc = (ensemble.get("out_of_fold") or {}).get("auc")
    return (f"an ensemble of {ensemble['members']} fold models of this configuration (each trained on all but one of "
            f"{ensemble['members']} folds of the training data, seeds {ensemble.get('seeds')}), their probabilities "
            "averaged" + (f"; out-of-fold AUC of the members {auc:.3f}" if isinstance(auc, float) else ""))


def _intended_use(facts: Mapping[str, Any]) -> list[str]:
    text = facts.get("intended_use")
    return ["## Intended use", "", text or _TO_FILL.format(
        what="primary intended uses and users, the clinical role (triage, second reader, research only), "
             "and uses that are out of scope")]


def _factors() -> list[str]:
    return ["## Factors", "", _TO_FILL.format(
        what="relevant groups (age, sex, scanner, site, acquisition protocol) and whether performance was "
             "measured per group; medsweep records none of these")]


def _metrics(facts: Mapping[str, Any]) -> list[str]:
    cv, threshold, calibration = _section(facts, "cv"), _section(facts, "threshold"), _section(facts, "calibration")
    lines = ["## Metrics", "",
             f"- Model selection: {_value(_section(facts, 'search').get('objective'))} over cross-validation folds, "
             f"interval by {_value(cv.get('method'))}.",
             "- Locked test set: accuracy, balanced accuracy, ROC AUC, sensitivity, specificity, F1, log loss, "
             "Brier score and expected calibration error, each with a stratified percentile bootstrap 95% interval."]
    if threshold:
        lines.append(f"- Decision threshold {_value(threshold.get('value'), 4)}"
                     + (f" for specificity {threshold['target_specificity']:g}"
                        if threshold.get("target_specificity") is not None else "")
                     + f", chosen on {_value(threshold.get('chosen_on'))}.")
    else:
        lines.append("- Decision threshold: 0.5 on the positive-class probability (argmax for three or more classes).")
    lines.append(f"- Calibration: Brier score and ECE ({_value(calibration.get('binning', '10 equal-width bins'))}).")
    return lines


def _evaluation_data(facts: Mapping[str, Any]) -> list[str]:
    test, data = _section(facts, "test"), _section(facts, "data")
    lines = ["## Evaluation data", ""]
    if not test:
        return lines + ["No locked test set was measured; the only figures are cross-validated (see below)."]
    counts = test.get("counts") or {}
    lines.append(f"- Locked test split of the study's data: {_value(test.get('images'))} images"
                 + (" (" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")" if counts else "")
                 + f", never seen by any trial, measured once at {_value(test.get('measured_at'))}.")
    lines.append(f"- Same source as the training data ({_value(data.get('location'))}); no external test set. "
                 + _TO_FILL.format(what="external validation, if any"))
    return lines


def _training_data(facts: Mapping[str, Any]) -> list[str]:
    data, model = _section(facts, "data"), _section(facts, "model")
    fingerprint = data.get("fingerprint") or {}
    counts = data.get("counts") or {}
    lines = ["## Training data", "",
             f"- Location: {_value(data.get('location'))}.",
             f"- Fingerprint: {_value(fingerprint.get('file_count'))} files, content hash "
             f"`{_value(fingerprint.get('content_hash'))}`.",
             "- Images per class: " + (", ".join(f"{k}: {v}" for k, v in counts.items()) or NOT_RECORDED) + ".",
             f"- Groups and duplicates: {_value(data.get('groups'))}.",
             f"- Partitions: {_value(data.get('split'))}.",
             f"- Pre-processing: decoded from PNG/JPEG (16-bit scaled to 8-bit, grey to RGB), resized to "
             f"{_value(model.get('image_size', (model.get('config') or {}).get('image_size')))} px; the backbone's "
             "own input scaling inside the model; augmentation as in the configuration.",
             "", _TO_FILL.format(what="data sources, eligibility, de-identification and how the labels (ground truth) "
                                  "were established and by whom")]
    return lines


def _quantitative(facts: Mapping[str, Any]) -> list[str]:
    search, cv, test = _section(facts, "search"), _section(facts, "cv"), _section(facts, "test")
    trials = search.get("trials") or {}
    budget = search.get("budget")
    if isinstance(budget, Mapping):
        budget = ", ".join(f"{k} {v}" for k, v in budget.items() if v is not None) or None
    lines = ["## Quantitative analyses", "", "### The search", "",
             f"- Study {_value(search.get('study'))}: objective {_value(search.get('objective'))} "
             f"({_value(search.get('direction'))}), sampler {_value(search.get('sampler'))}, pruner "
             f"{_value(search.get('pruner'))}; budget: {_value(budget)}.",
             f"- Trials: {_value(trials.get('complete'))} complete, {_value(trials.get('pruned'))} pruned, "
             f"{_value(trials.get('failed'))} failed; the final model retrains trial "
             f"{_value(search.get('selected_trial'))}, {search.get('selected_how') or 'the best by the objective'}."]
    if search.get("within_noise") is not None:
        from medsweep.objectives.metrics import TIE_TEST, describe_ties

        lines.append(f"- {describe_ties(int(search['within_noise']))} ({TIE_TEST}, alpha 0.05): "
                     "the choice among them is not supported by the data.")
    space = search.get("space") or {}
    if space:
        lines += ["", "Search space:", ""] + _table(("parameter", "range"), list(space.items()))
    lines += ["", "### Cross-validated result (selection, optimistic for the selected trial)", ""]
    if cv:
        folds = ", ".join(f"{v:.3f}" for v in cv.get("folds") or [])
        lines.append(f"- {_value(cv.get('metric', search.get('objective')))}: {_value(cv.get('mean'))}"
                     f"{_interval(cv.get('ci95'))} over {len(cv.get('folds') or [])} folds ({folds}).")
    else:
        lines.append(f"- {NOT_RECORDED} (the study did not cross-validate).")
    lines += ["", "### Locked test set (measured once)", ""]
    if test.get("metrics"):
        intervals = test.get("ci95") or {}
        rows = [(name, f"{value:.3f}{_interval(intervals.get(name))}") for name, value in test["metrics"].items()
                if isinstance(value, float)]
        lines += _table(("metric", "value [95% CI]"), rows)
        matrix = test["metrics"].get("confusion_matrix")
        if matrix:
            lines += ["", f"Confusion matrix (rows true, columns predicted): {matrix}"]
    else:
        lines.append(f"- {NOT_RECORDED}.")
    lines += ["", "### Calibration", ""] + _calibration_lines(_section(facts, "calibration"))
    return lines


def _calibration_lines(calibration: Mapping[str, Any]) -> list[str]:
    if calibration and calibration.get("skipped"):
        return [f"- Not recalibrated: `--calibrate` kept T = 1 because {calibration['skipped']}; the probabilities "
                "are the network's own."]
    if not calibration or calibration.get("temperature") is None:
        return ["- Not recalibrated: the probabilities are the network's own (see Brier and ECE above)."]
    temperature = float(calibration["temperature"])
    # Which way the fit went, in words; T = 1 would be no change.
    meaning = ("above 1: the network was over-confident" if temperature > 1
               else "below 1: the network was under-confident" if temperature < 1 else "1: no change")
    lines = [f"- {_value(calibration.get('method'))}: temperature {temperature:.3f} "
             f"({meaning}), stored in the model as its last layer."]
    rows = []
    for part in ("validation", "test"):
        figures = calibration.get(part) or {}
        if figures:
            before, after = figures.get("before") or {}, figures.get("after") or {}
            rows.append((part, before.get("brier"), after.get("brier"), before.get("ece"), after.get("ece")))
    if rows:
        lines += [""] + _table(("data", "Brier before", "Brier after", "ECE before", "ECE after"), rows)
    return lines


def _ethics() -> list[str]:
    return ["## Ethical considerations", "", _TO_FILL.format(
        what="sensitive data used, risks to patients of false negatives and false positives, mitigations, "
             "and who is accountable for decisions made with this model")]


def _caveats(facts: Mapping[str, Any]) -> list[str]:
    explanation = _section(facts, "explanation")
    lines = ["## Caveats and recommendations", "",
             "- Small data: the intervals above are wide for a reason; a difference inside them is not a finding.",
             "- The test set comes from the same source as the training data; it does not show how the model "
             "behaves on another scanner, site or population.",
             "- The cross-validated figure of the selected trial is optimistic (it won a search); the locked test "
             "figure is the unbiased one."]
    if explanation:
        lines.append(f"- Saliency: {_value(explanation.get('method'))} overlays ({_value(explanation.get('where'))}) "
                     "show where the network's evidence lies; they are not validated localisations.")
    lines += ["", facts.get("limitations") or _TO_FILL.format(what="known limitations and failure modes")]
    return lines


def _claim_table() -> list[str]:
    lines = ["## CLAIM checklist coverage", "",
             "Items of CLAIM (Mongan, Moy & Kahn, Radiology: Artificial Intelligence 2020) and where this card "
             "answers them.", ""]
    rows = [(number, name, _STATUS[status], _WHERE.get(number, "")) for number, name, status in CLAIM_ITEMS]
    return lines + _table(("item", "topic", "status", "where"), rows)


def _warnings(facts: Mapping[str, Any]) -> list[str]:
    warnings = [str(w) for w in facts.get("warnings") or []]
    if not warnings:
        return []
    return ["## Warnings", ""] + [f"- **Warning:** {w.strip()}".replace("\n", " ") for w in warnings]


def render_model_card(facts: Mapping[str, Any]) -> str:
    """The Markdown model card for `facts` (see the module docstring for its keys)."""
    model = _section(facts, "model")
    title = f"# Model card: {model.get('file') or 'medsweep model'}"
    parts = [[title, "", "Written by `medsweep train --final`. Sections follow Mitchell et al. (2019), "
                        "\"Model Cards for Model Reporting\"; italic prompts are for the model's owner to fill."],
             _warnings(facts), _model_details(facts), _intended_use(facts), _factors(), _metrics(facts),
             _evaluation_data(facts), _training_data(facts), _quantitative(facts), _ethics(), _caveats(facts), _claim_table()]
    return "\n\n".join("\n".join(part) for part in parts if part).replace("\n\n\n", "\n\n") + "\n"


def _describe_range(spec: Any) -> str:
    if isinstance(spec, list):
        return "one of " + ", ".join(str(v) for v in spec)
    if isinstance(spec, Mapping) and "low" in spec:
        return f"{spec['low']:g} to {spec['high']:g}" + (", log scale" if spec.get("log") else "")
    return f"fixed {spec}"


def search_facts(study: Any, settings: Any, *, within_noise: int | None = None, storage: Any = None,
                 budget: str | None = None) -> dict[str, Any]:
    """The card's `search` section from an Optuna study and its StudySettings (no TensorFlow);
    `storage` (the study's) supplies the wall budget, kept on the study as a system attribute."""
    from optuna.trial import TrialState

    from .workers._budget import format_duration, stored_budget_seconds

    counts = {name: len(study.get_trials(deepcopy=False, states=(state,)))
              for name, state in (("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED),
                                  ("failed", TrialState.FAIL))}
    if budget is None:
        # The wall budget (create/worker --budget) is kept on the study; a trial count is not.
        seconds = stored_budget_seconds(storage, study.study_name) if storage is not None else None
        ran = f"{sum(counts.values())} trials run"
        budget = f"wall clock {format_duration(seconds)} ({ran})" if seconds else f"{ran}, no wall-clock budget"
    return {"study": study.study_name, "objective": settings.metric, "direction": settings.direction,
            "sampler": type(study.sampler).__name__, "pruner": settings.pruner, "trials": counts,
            "budget": budget,
            "space": {name: _describe_range(spec) for name, spec in settings.space.items()},
            "within_noise": within_noise}


def _class_counts(labels: Any, class_names: list[str]) -> dict[str, int]:
    import numpy as np

    counted = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counted)}


def card_facts(document: Mapping[str, Any], metadata: Mapping[str, Any], *, model_file: str | None = None,
               dataset: Any = None, search: Mapping[str, Any] | None = None,
               calibration: Mapping[str, Any] | None = None, explanation: Mapping[str, Any] | None = None,
               ) -> dict[str, Any]:
    """The facts `render_model_card` needs, from what `train --final` holds: the export document (with its
    measured `test` section), the saved model's metadata, the ImageDataset it trained on, the study's
    search facts (`search_facts`), the temperature report and where the saliency overlays are."""
    config = dict(metadata.get("config") or document.get("config") or {})
    image_size = config.get("image_size")
    if config and image_size is None:
        from medsweep.objectives import TrialConfig

        image_size = TrialConfig.from_dict(config).resolved_image_size  # None means the backbone's default
    class_names = list(metadata.get("class_names") or (metadata.get("fingerprint") or {}).get("class_names") or [])
    # The model's own measurement: an ensemble's lives under the export's `ensemble_test`.
    test = dict(metadata.get("test") or document.get("test") or {})
    data: dict[str, Any] = {"location": metadata.get("trained_on") or (document.get("data") or {}).get("data_dir"),
                            "fingerprint": metadata.get("fingerprint") or (document.get("data") or {}).get("fingerprint")}
    if dataset is not None:
        labels = list(dataset.train_files.labels)
        for extra in (dataset.val_files, dataset.test_files):
            labels += list(extra.labels) if extra is not None else []
        data["counts"] = _class_counts(labels, class_names)
        data["groups"] = dataset.plan.groups.describe()
        data["split"] = dataset.plan.describe()
        if test:
            test["counts"] = _class_counts(_test_labels(dataset), class_names)
    objective = document.get("objective") or {}
    search_section = {"study": document.get("study"), "objective": objective.get("metric"),
                      "direction": objective.get("direction"), **(search or {}),
                      "selected_trial": document.get("trial")}
    cv = dict(document.get("cv") or {})
    if cv:
        cv.setdefault("metric", objective.get("metric"))
    created = str(test.get("measured_at") or "")[:10] or None
    return {"model": {"file": model_file or test.get("model"), "created": created, "backbone": config.get("backbone"),
                      "image_size": image_size, "weights": config.get("weights"),
                      "class_names": class_names, "config": config, "ensemble": metadata.get("ensemble")},
            "data": data, "search": search_section, "cv": cv, "test": test,
            "threshold": document.get("threshold") or metadata.get("threshold") or {},
            "calibration": dict(calibration or {}), "explanation": dict(explanation or {}),
            "versions": metadata.get("versions") or document.get("versions") or {},
            "warnings": list(metadata.get("warnings") or [])}


def _test_labels(dataset: Any) -> list[int]:
    # The locked test labels without decoding a single image.
    if dataset.test_files is not None:
        return list(dataset.test_files.labels)
    return [int(dataset.labels[i]) for i in dataset.plan.test]

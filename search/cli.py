"""The `medsweep` command line: each command parses its options and calls one function."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from medsweep.objectives.config import INTENSITIES as INTENSITY_CHOICES
from medsweep.storage import DEFAULT_STORAGE_URL, STORAGE_ENV

from ._errors import USER_ERRORS

_METRICS = ("auc", "accuracy", "balanced_accuracy", "loss")
_PRUNERS = ("median", "hyperband", "none")
VERBOSE_ENV = "MEDSWEEP_VERBOSE"  # read by objectives too: keep TensorFlow's start-up lines


# The storage URL this command opened, so a database that fails later is named (password masked).
_opened_url: str | None = None


def _storage_failure(error: Exception) -> Exception | None:
    """A database lost in the middle of a command as one StorageError line, else None (a bug
    keeps its traceback)."""
    if _opened_url is None:
        return None
    from medsweep.storage import explain_storage_error, is_unreachable

    if not is_unreachable(_opened_url, error):
        return None
    return explain_storage_error(_opened_url, error, failed="lost storage")


class _Group(click.Group):
    """Prints user mistakes and database failures as one line (password masked) and exits 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        except Exception as error:
            explained = _storage_failure(error)
            if explained is None:
                raise
            click.echo(f"error: {explained}", err=True)
            sys.exit(1)


def storage_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--storage", envvar=STORAGE_ENV, default=DEFAULT_STORAGE_URL, show_default=True,
        help=f"Study storage URL (SQLite or postgresql+psycopg2://...); also ${STORAGE_ENV}.",
    )(function)


def training_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--cache-dir, --mixed-precision and --xla: recorded for this worker and the processes it starts."""
    import functools

    @functools.wraps(function)
    def wrapper(*args: Any, cache_dir: str | None, mixed_precision: bool, xla: str, **kwargs: Any) -> Any:
        from medsweep.objectives.training import set_worker_options

        set_worker_options(cache_dir=cache_dir, mixed_precision=mixed_precision, xla=xla)
        return function(*args, **kwargs)

    options = [
        click.option("--cache-dir", envvar="MEDSWEEP_CACHE_DIR", type=click.Path(file_okay=False),
                     help="Feature cache folder shared by the workers of this machine "
                          "(default ~/.cache/medsweep/features); also $MEDSWEEP_CACHE_DIR."),
        click.option("--mixed-precision", is_flag=True, envvar="MEDSWEEP_MIXED_PRECISION",
                     help="mixed_float16 training on GPUs (ignored on CPU)."),
        click.option("--xla", type=click.Choice(("auto", "on", "off")), default="auto", show_default=True,
                     envvar="MEDSWEEP_XLA", help="XLA-compile training steps; auto: on with a GPU, off on CPU."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _open(storage_url: str) -> Any:
    global _opened_url
    from medsweep.storage import open_storage

    opened = open_storage(storage_url)
    _opened_url = opened.url
    return opened


def data_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The data and split options `create` and `paper` share, turned into one `data` argument:
    a DataSpec, or None when none of them was given."""
    import functools

    @functools.wraps(function)
    def wrapper(*args: Any, data_dir: str | None, manifest: str | None, val_dir: str | None,
                validation_fraction: float, split_seed: int, cv: int, repeats: int, test_fraction: float,
                test_dir: str | None, group_pattern: str | None, group_by: str | None, window: str | None,
                skip_unreadable: bool, **kwargs: Any) -> Any:
        from .study._data import make_data_spec

        given = (data_dir, manifest, val_dir, test_dir, group_pattern, group_by, window, skip_unreadable)
        defaults = (validation_fraction, split_seed, cv, repeats, test_fraction) == (0.2, 0, 0, 1, 0.0)
        data = None if not any(given) and defaults else make_data_spec(
            data_dir, manifest=manifest, val_dir=val_dir, validation_fraction=validation_fraction,
            split_seed=split_seed, group_pattern=group_pattern, cv=cv, repeats=repeats,
            test_fraction=test_fraction, test_dir=test_dir, group_by=group_by, window=window,
            skip_unreadable=skip_unreadable)
        return function(*args, data=data, **kwargs)

    options = [
        click.option("--data", "data_dir", type=click.Path(), help="Folder of class subfolders (TRAIN/<class>/...)."),
        click.option("--manifest", type=click.Path(), help="CSV of path,label[,group] rows instead of --data."),
        click.option("--val-dir", type=click.Path(), help="Separate validation folder with the same classes."),
        click.option("--validation-fraction", default=0.2, show_default=True,
                     help="Stratified validation share when there is no --val-dir."),
        click.option("--split-seed", default=0, show_default=True, help="Seed of the test split, validation split and folds."),
        click.option("--cv", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Cross-validate with K folds (0: one validation split)."),
        click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Repeat the K folds this often (new shuffles)."),
        click.option("--test-fraction", default=0.0, show_default=True, type=click.FloatRange(0, 0.5),
                     help="Lock this share of images as a test set no trial sees."),
        click.option("--test-dir", type=click.Path(), help="Separate locked test folder with the same classes."),
        click.option("--group-pattern", help=r"Regex on file names giving the group (patient) id, e.g. '^(P\d+)_'."),
        click.option("--group-by", type=click.Choice(("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber")),
                     help="DICOM header tag whose value is a group, so one patient never straddles splits (values hashed, never stored)."),
        click.option("--window", metavar="CENTER,WIDTH", help="Fixed grayscale window for every image, e.g. 40,400 (CT soft tissue); "
                                                               "default: a DICOM file's own window, else the image's range."),
        click.option("--skip-unreadable", is_flag=True, help="Train on the readable files even when over 10% of the files cannot be read."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def intensity_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """--intensity, for the commands that create a study (`create`, `paper`)."""
    return click.option(
        "--intensity", type=click.Choice(INTENSITY_CHOICES),
        help="Per-image grey-level rescaling before the backbone: raw, minmax or percentile (0.5-99.5). "
             "Needed when most images use only a sliver of their range.",
    )(function)


def _set_verbosity(verbose: bool) -> None:
    """Quiet by default: Optuna at WARNING, TensorFlow's C++ start-up lines off (objectives
    filters the rest while TensorFlow imports); worker processes inherit the choice."""
    import optuna  # already imported by the search package

    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    else:
        os.environ.pop(VERBOSE_ENV, None)
        # Level 3 also hides C++ error lines such as the CPU-only machine's "failed call to
        # cuInit"; real failures still surface as Python exceptions, and --verbose shows all.
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medsweep")
@click.option("--verbose", is_flag=True, envvar=VERBOSE_ENV,
              help=f"Show Optuna's INFO lines and TensorFlow's start-up messages; also ${VERBOSE_ENV}=1.")
def main(verbose: bool) -> None:
    """medsweep: hyperparameter search for transfer-learning medical image classifiers."""
    _set_verbosity(verbose)


@main.command()
@click.argument("study")
@data_options
@click.option("--space", "space_file", type=click.Path(), help="Search space YAML; overrides the default space.")
@click.option("--metric", default="auc", show_default=True,
              help=f"Objective: {', '.join(_METRICS)}, or sens@spec=0.9 (sensitivity at a target specificity).")
@click.option("--pruner", type=click.Choice(_PRUNERS), default="median", show_default=True)
@intensity_option
@click.option("--resume", is_flag=True, help="Reuse the study if it exists instead of failing.")
@click.option("--budget", help="The study's wall budget (30m, 2h, 1800s): the first worker starts it, every worker keeps it.")
@storage_option
def create(study: str, data: Any, space_file: str | None, metric: str, pruner: str, intensity: str | None,
           resume: bool, budget: str | None, storage: str) -> None:
    """Create a study on a data folder or manifest (checks every image, reports duplicates and groups)."""
    from medsweep.objectives.images import ImageDataset

    from .study._data import describe_dataset, make_data_spec
    from .study._space import SearchSpace
    from .study._intensity import apply_intensity
    from .study._study import SETTINGS_KEY, check_study_name, create_study
    from .study._weights import describe_weights, weights_files

    from .workers._budget import parse_duration, store_budget_seconds

    check_study_name(study)
    budget_seconds = parse_duration(budget) if budget is not None else None
    space = SearchSpace.from_yaml(space_file) if space_file else SearchSpace.default()
    spec = data or make_data_spec(None)  # no data option at all: the one-line "pass --data" error
    dataset = ImageDataset.open(spec)
    space, intensity_note = apply_intensity(dataset.check_decodable(), space, intensity)
    if intensity_note:
        click.echo(intensity_note, err=True)
    opened = _open(storage)
    created = create_study(opened, study, dataset, space, metric=metric, pruner=pruner, resume=resume)
    if budget_seconds is not None:
        store_budget_seconds(opened, created.study_name, budget_seconds)
    stored = created.user_attrs.get(SETTINGS_KEY, {})  # --resume: the study's own, not this command's
    click.echo(f"study {created.study_name}: {describe_dataset(dataset)}; objective {stored.get('metric', metric)}, pruner {pruner}")
    for line in describe_weights(weights_files(SearchSpace(stored["space"]) if stored.get("space") else space)):
        click.echo(line)


@main.command()
@click.argument("study")
@click.option("--n-trials", type=click.IntRange(min=1), help="Total trials for the study, across all workers and machines.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop starting trials after this many seconds.")
@click.option("--budget", help="The whole study's wall budget across workers and machines (30m, 2h, 1800s); spent cheap trials first, then fine-tuning.")
@click.option("--max-failures", default=3, show_default=True, help="Stop after this many failed trials in a row.")
@click.option("--data", "data_dir", type=click.Path(), help="The study's data (its folder, or for a manifest study the CSV or its folder) under another path on this machine.")
@training_options
@click.option("--gpus", help="GPUs to use, one worker process each: all (default), none, or ids such as 0,1,3.")
@click.option("--workers", type=click.IntRange(min=1), help="Run N CPU worker processes instead (small models).")
@click.option("--max-retries", default=2, show_default=True, type=click.IntRange(min=0),
              help="Retries of a trial whose worker died or was stopped.")
@click.option("--heartbeat-interval", default=10, show_default=True, type=click.IntRange(min=1),
              help="Seconds between a running trial's heartbeats.")
@click.option("--grace-period", default=40, show_default=True, type=click.IntRange(min=2),
              help="Seconds without a heartbeat after which a trial counts as dead and is retried.")
@click.option("--db-down-limit", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds the database may stay unreachable before the workers stop.")
@click.option("--quiet", is_flag=True, help="No progress display, only warnings and the final line.")
@click.option("--in-process", is_flag=True, hidden=True, help="Run one worker in this process (used by the supervisor).")
@storage_option
def worker(study: str, n_trials: int | None, timeout: float | None, budget: str | None, max_failures: int,
           data_dir: str | None,
           gpus: str | None, workers: int | None, max_retries: int, heartbeat_interval: int, grace_period: int,
           db_down_limit: float, quiet: bool, in_process: bool, storage: str) -> None:
    """Run trials of a study: one process per GPU (or --workers N on CPU), all sharing the
    study's --n-trials and --budget; start more on other machines against the same database."""
    from .workers._budget import parse_duration
    from .workers._supervisor import WorkerOptions, worker_command

    options = WorkerOptions(n_trials, timeout, max_failures, data_dir, max_retries, heartbeat_interval,
                            grace_period, db_down_limit, quiet,
                            budget=parse_duration(budget) if budget is not None else None)
    code = worker_command(storage, study, options, gpus=gpus, workers=workers, in_process=in_process,
                          echo=click.echo)
    sys.exit(code)


@main.command()
@click.argument("study")
@storage_option
def status(study: str, storage: str) -> None:
    """Show a study's trials (state, value, epochs, duration, params) and the best so far."""
    from .results._status import status_report
    from .study._study import load_study

    opened = _open(storage)
    loaded, settings = load_study(opened, study)
    click.echo(status_report(loaded, settings.metric, opened))


@main.command()
@click.argument("study")
@click.option("-o", "--output", default="best.yaml", show_default=True, type=click.Path(), help="Where to write the config.")
@click.option("--prefer", type=click.Choice(("best", "cheapest")), default="best", show_default=True,
              help="cheapest: of the best trial and those within noise of it (corrected resampled t-test "
                   "over the folds), the one that took the fewest seconds.")
@storage_option
def export(study: str, output: str, prefer: str, storage: str) -> None:
    """Write the best trial's config, metrics, data fingerprint, versions and ties as YAML."""
    from .results._export import check_output_path, export_best, write_export
    from .study._study import load_study

    check_output_path(output, "-o")
    loaded, settings = load_study(_open(storage), study)
    document = export_best(loaded, settings, prefer=prefer)
    path = write_export(document, output)
    ties = document.get("ties") or {}
    click.echo(f"exported trial {document['trial']} ({settings.metric} {document['objective']['value']:.4f}) to {path}")
    if ties.get("tested"):
        click.echo(f"{ties['summary']}; exported {ties['exported']}")


@main.command()
@click.argument("config_file", type=click.Path())
@click.option("--data", "data_dir", type=click.Path(), help="Folder of class subfolders to train on (with --final: the study's data under another path).")
@click.option("--val-dir", type=click.Path(), help="Validation folder to measure the final model on.")
@click.option("--final", is_flag=True, help="Train on every non-test image of the study, then measure the locked test set once.")
@click.option("--remeasure", is_flag=True, help="With --final: measure the test set again although the export says it was.")
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=0), help="With --final: bootstrap resamples for the test metrics' 95% intervals.")
@click.option("--calibrate", is_flag=True, help="With --final: hold out the study's validation images, fit temperature "
                                                "scaling on them and show Brier/ECE before and after.")
@click.option("-o", "--output", default="model.keras", show_default=True, type=click.Path())
@click.option("--verbose", is_flag=True, help="Show Keras progress per epoch.")
def train(config_file: str, data_dir: str | None, val_dir: str | None, final: bool, remeasure: bool, bootstrap: int,
          calibrate: bool, output: str, verbose: bool) -> None:
    """Retrain an exported config (from `medsweep export`) and save the model; no study needed.
    With --final, also writes MODEL.card.md (the model card) beside the model."""
    from .results._export import check_output_path
    from .results._retrain import retrain

    check_output_path(output, "-o", suffix=".keras")  # before training, not after it
    if not final and not data_dir:
        raise click.UsageError("pass --data FOLDER, or --final to train on the study's own data")
    if calibrate and not final:
        raise click.UsageError("--calibrate needs --final")
    done = retrain(config_file, output, data_dir=data_dir, val_dir=None if final else val_dir, final=final,
                   remeasure=remeasure, bootstrap=bootstrap, verbose=2 if verbose else 0, calibrate=calibrate)
    for note in done.notes:
        click.echo(f"note: {note}")
    if done.test is not None:
        from .results._format import format_calibration, format_metrics

        click.echo(f"saved {done.path} (trained on {done.trained_images} images); locked test set, "
                   f"{done.test['images']} images, measured once:")
        click.echo(format_metrics(done.test["metrics"], done.test["ci95"]))
        if done.calibration is not None:
            click.echo(format_calibration(done.calibration))
        click.echo(f"test metrics written to {done.export_path} and into the model; model card {done.card_path}")
        return
    measured = ", ".join(f"{k} {v:.3f}" for k, v in done.metrics.items() if isinstance(v, float))
    click.echo(f"saved {done.path}" + (f" (validation: {measured})" if measured else ""))


@main.command()
@click.argument("model_file", type=click.Path())
@click.option("--data", "data", type=click.Path(), help="Folder of class subfolders or a path,label CSV (with --test: "
                                                         "the study's data under another path).")
@click.option("--test", "locked_test", is_flag=True, help="Measure the model's own study's locked test split "
                                                          "(found through the model and --storage), once.")
@click.option("--remeasure", is_flag=True, help="With --test: measure again although the model says it was measured.")
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=0), help="Bootstrap resamples for the 95% intervals (0: none).")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--exclude-seen", is_flag=True, help="Leave out the images that trained or selected the model (by content hash).")
@click.option("--plot", "plot_file", type=click.Path(), help="Also write the reliability diagram as this PNG file.")
@storage_option
def evaluate(model_file: str, data: str | None, locked_test: bool, remeasure: bool, bootstrap: int, seed: int,
             exclude_seen: bool, plot_file: str | None, storage: str) -> None:
    """Measure a saved model on labelled images: every metric with a bootstrap 95% interval, and
    how many of the images the model already saw."""
    from medsweep.objectives.evaluation import evaluate_model
    from medsweep.objectives.metrics import check_plot_path, reliability_png

    from .results._format import format_metrics
    from .results._inputs import check_evaluation_inputs

    if plot_file:
        check_plot_path(plot_file)
    if locked_test:
        _evaluate_locked_test(model_file, data, remeasure, bootstrap, seed, exclude_seen, plot_file, storage)
        return
    if not data:
        raise click.UsageError("pass --data FOLDER (or a CSV), or --test to measure the model's study's locked test split")
    check_evaluation_inputs(model_file, data)  # before TensorFlow loads
    evaluation = evaluate_model(model_file, data, resamples=bootstrap, seed=seed, exclude_seen=exclude_seen)
    if evaluation.seen is not None:
        click.echo(evaluation.seen.describe(excluded=exclude_seen))
    note = f", threshold {evaluation.threshold:.4f} from the model" if evaluation.threshold is not None else ""
    click.echo(f"{model_file} on {data}: {evaluation.metrics['n']} images{note}")
    if evaluation.unread:
        click.echo(f"note: {evaluation.unread}")
    click.echo(format_metrics(evaluation.metrics, evaluation.intervals))
    if plot_file and evaluation.reliability is not None:
        click.echo(f"reliability diagram written to {reliability_png(evaluation.reliability, plot_file, Path(model_file).name)}")


def _evaluate_locked_test(model_file: str, data: str | None, remeasure: bool, bootstrap: int, seed: int,
                          exclude_seen: bool, plot_file: str | None, storage: str) -> None:
    """`evaluate --test`: show the stored figures, or measure the study's locked test split once."""
    from medsweep.objectives.metrics import reliability_png

    from .results._format import format_metrics
    from .results._locked_test import measure_locked_test, open_test_split, stored_test, study_of_model
    from .study._study import load_study

    metadata, study = study_of_model(model_file)
    stored = stored_test(metadata, remeasure)
    if stored is not None:
        click.echo(f"the locked test split of study {study!r} was already measured for this model at "
                   f"{stored.get('measured_at')}; showing those figures (pass --remeasure to measure again; a second "
                   "measurement after acting on the first is optimistic)")
        click.echo(f"{model_file} on the locked test split of study {study!r}: {stored.get('images')} images")
        click.echo(format_metrics(stored.get("metrics") or {}, stored.get("ci95") or {}))
        if plot_file:
            click.echo("note: no reliability diagram written; the stored figures hold none (--remeasure draws one)")
        return
    _, settings = load_study(_open(storage), study)
    dataset = open_test_split(settings, metadata, study, data)
    result = measure_locked_test(model_file, metadata, dataset, study, bootstrap=bootstrap, seed=seed,
                                 exclude_seen=exclude_seen)
    click.echo(result.seen_line)
    threshold = (metadata.get("threshold") or {}).get("value")
    note = f", threshold {threshold:.4f} from the model" if threshold is not None else ""
    click.echo(f"{model_file} on the locked test split of study {study!r}: {result.test['images']} images, measured once{note}")
    click.echo(format_metrics(result.test["metrics"], result.test["ci95"]))
    click.echo(f"test figures written into {model_file}; a second `evaluate --test` shows them")
    if plot_file and result.reliability is not None:
        click.echo(f"reliability diagram written to {reliability_png(result.reliability, plot_file, Path(model_file).name)}")


@main.command()
@click.argument("model_file", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(), help="Folder for the overlay PNGs (IMAGE.gradcam.png).")
@click.option("--class", "class_name", help="Explain this class for every image instead of each image's predicted class.")
@click.option("--layer", help="Backbone layer whose feature map Grad-CAM uses (default: the deepest one at least 7x7).")
def explain(model_file: str, images: tuple[str, ...], output_dir: str, class_name: str | None, layer: str | None) -> None:
    """Write a Grad-CAM overlay PNG for each image: where the model looks for its prediction."""
    from medsweep.objectives.evaluation import explain_files

    for row in explain_files(model_file, images, output_dir, class_name=class_name, layer=layer):
        click.echo(f"{row['overlay']}\t{row['class']}\t{row['probability']:.4f}\texplains {row['explained']}")


@main.command()
@click.argument("model_file", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
def predict(model_file: str, files: tuple[str, ...]) -> None:
    """Print each image's predicted class and probability."""
    from medsweep.objectives.evaluation import predict_files

    from .results._inputs import check_prediction_inputs

    check_prediction_inputs(model_file, files)  # before TensorFlow loads
    for row in predict_files(model_file, files):
        click.echo(f"{row['file']}\t{row['class']}\t{row['probability']:.4f}")


@main.command()
@click.argument("study")
@click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(), help="The HTML file to write.")
@click.option("--png", "png_dir", type=click.Path(), help="Also write each figure as DIR/<figure>.png (needs Chromium).")
@click.option("--model", "model_file", type=click.Path(), help="A model of this study (e.g. from `train --final`): "
                                                               "adds Grad-CAM rows of its validation images.")
@storage_option
def report(study: str, output: str, png_dir: str | None, model_file: str | None, storage: str) -> None:
    """Write one self-contained HTML report (opens offline): summary, baselines, figures, ties,
    calibration and (with --model) where the model looks."""
    from .report._report import write_study_report
    from .study._study import load_study

    if model_file:
        from medsweep.objectives.model import read_model_metadata

        read_model_metadata(model_file)  # a missing or foreign file fails before the study is read
    loaded, settings = load_study(_open(storage), study)
    _, path, pngs = write_study_report(loaded, settings, output, png_dir, model_file=model_file)
    click.echo(f"wrote {path}" + (f" and {len(pngs)} PNG figures in {png_dir}" if png_dir else ""))


@main.command()
@click.argument("study")
@data_options
@click.option("--space", "space_file", type=click.Path(), help="Search space YAML for a new study (widened for the baselines).")
@click.option("--metric", type=click.Choice(_METRICS), default="auc", show_default=True, help="Objective of a new study.")
@click.option("--pruner", type=click.Choice(_PRUNERS), default="median", show_default=True)
@intensity_option
@storage_option
def paper(study: str, data: Any, space_file: str | None, metric: str, pruner: str, intensity: str | None,
          storage: str) -> None:
    """Enqueue the survey's ten configurations as a study's first trials (baselines); a new study
    takes the same data, split and cross-validation options as `create`."""
    from .study._paper import run_paper
    from .study._space import SearchSpace

    space = SearchSpace.from_yaml(space_file) if space_file else None
    result = run_paper(_open(storage), study, data=data, space=space, metric=metric, pruner=pruner,
                       intensity=intensity)
    if result.intensity_note:
        click.echo(result.intensity_note, err=True)
    if result.created:  # what `create` would say about the data
        click.echo(f"study {study}: {result.data}")
    action = "created study" if result.created else "study"
    click.echo(f"{action} {study}: enqueued {len(result.enqueued)} survey baselines"
               + ("" if result.enqueued else " (it already holds all ten)")
               + "; run `medsweep worker` to train them, then the search continues")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; the dashboard has no login.")
@click.option("--port", default=8080, show_default=True)
@storage_option
def dashboard(host: str, port: int, storage: str) -> None:
    """Serve optuna-dashboard on the study storage (per-epoch curves, trial metrics)."""
    from ._dashboard import serve_dashboard

    serve_dashboard(_open(storage), host, port, echo=lambda m: click.echo(m, err=True))


@main.command()
@click.option("--workdir", default="medsweep-demo", show_default=True, type=click.Path(), help="Folder for data, database and outputs.")
@click.option("--n-trials", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--storage", envvar=None, default=None, help="Storage URL (default: a fresh SQLite file in the workdir).")
def demo(workdir: str, n_trials: int, storage: str | None) -> None:
    """Run the whole loop on synthetic images: search, export, retrain, predict."""
    from ._demo import run_demo

    run_demo(Path(workdir), storage, n_trials, click.echo)


if __name__ == "__main__":
    main()

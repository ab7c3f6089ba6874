"""The `medsweep` command line: each command parses its options and calls one function."""

from __future__ import annotations

import errno
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


# An error line quotes user input (paths, values); a pathological one is cut here as a last resort.
MAX_ERROR_LINE = 4000
# What writing to a closed pipe or a full disk raises.
_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF}


def _error_line(error: object) -> str:
    text = str(error)
    if len(text) > MAX_ERROR_LINE:
        text = f"{text[:MAX_ERROR_LINE]}... ({len(text):,} characters)"
    return f"error: {text}"


def _writing_output(error: OSError) -> bool:
    """True when `error` came from writing this command's output (click.echo, print, rich)."""
    import linecache

    if error.errno not in _OUTPUT_ERRNOS:
        return False
    frame = error.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        if code.co_filename.endswith((os.path.join("click", "utils.py"), os.path.join("rich", "console.py"))) \
                or code.co_name == "_flush_output":
            return True
        if frame.tb_next is None:  # print() is C code: its caller is the last Python frame
            return "print(" in linecache.getline(code.co_filename, frame.tb_lineno)
        frame = frame.tb_next
    return False


def _flush_output() -> None:
    # Flushed here, not at interpreter exit, where a failure is a warning and exit status 120.
    if sys.stdout is not None:
        sys.stdout.flush()


def _output_failed(error: OSError) -> None:
    """Say in one line on stderr that the output could not be written, and exit 1 without the
    interpreter's own complaint about flushing stdout at exit."""
    hint = {errno.EPIPE: "the program reading it stopped early; pipe into one that reads everything, or write to a file",
            errno.ENOSPC: "free some space, or write the output to another disk",
            errno.EDQUOT: "free some space, or write the output to another disk"}.get(
        error.errno or 0, "write the output to a file or a terminal instead")
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    click.echo(f"error: cannot write to standard output ({error.strerror}); {hint}", err=True)
    sys.exit(1)


class _Group(click.Group):
    """Prints user mistakes, database failures and output that cannot be written as one line
    (password masked) and exits 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:  # --help and --version of `medsweep` itself write before any command runs
            return super().main(*args, **kwargs)
        except OSError as error:
            if not _writing_output(error):
                raise
            _output_failed(error)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            _flush_output()
            return result
        except USER_ERRORS as error:
            click.echo(_error_line(error), err=True)
            sys.exit(1)
        except OSError as error:
            if not _writing_output(error):
                raise
            _output_failed(error)
        except Exception as error:
            explained = _storage_failure(error)
            if explained is None:
                raise
            click.echo(_error_line(explained), err=True)
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


def _open(storage_url: str, *, create: bool = False) -> Any:
    """The storage of --storage; only the commands that make studies (`create`, `paper`) pass
    `create`: a read-only command on a mistyped path must not leave an empty database behind."""
    global _opened_url
    from medsweep.storage import open_storage

    opened = open_storage(storage_url, create=create)
    _opened_url = opened.url
    return opened


def _seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A number of seconds from 0 to 30 days (NaN and infinity refused: a NaN timeout never ends)."""
    from .workers._budget import check_seconds

    return None if value is None else check_seconds(value, f"--{param.name.replace('_', '-')}")


def _at_least_one(ctx: click.Context, param: click.Parameter, value: int) -> int:
    # 0 would stop before the first failure could be seen, and was reported as "0 trials in a row failed".
    if value < 1:
        from ._errors import WorkerError

        raise WorkerError(f"--{param.name.replace('_', '-')} {value} must be at least 1 (the worker stops after "
                          "that many failed trials in a row)")
    return value


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


def force_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """--force, for every command that writes files (the rule is in search/_overwrite.py)."""
    return click.option(
        "--force", is_flag=True,
        help="Write over existing files that are not this command's own earlier output (an earlier "
             "output of the same kind is replaced without it; the study's database never is).",
    )(function)


def _check_outputs(outputs: list[tuple[Any, Any]], option: str, force: bool, protected: list[Any]) -> list[str]:
    """Apply the output rule before any work; the notes on what gets replaced, which the command
    prints once it has written (so a command that fails says one line only)."""
    from ._overwrite import check_outputs

    return [f"note: {note}" for note in check_outputs(outputs, option=option, force=force, protected=protected)]


def _say(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


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
    if sys.stdout is None:  # started with stdout closed (`>&-`): every line would vanish
        from ._errors import MedsweepError

        raise MedsweepError("standard output is closed; give medsweep somewhere to write, e.g. > medsweep.log "
                            "or > /dev/null")
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
    space.check_every_configuration()  # before reading every image
    spec = data or make_data_spec(None)  # no data option at all: the one-line "pass --data" error
    dataset = ImageDataset.open(spec)
    space, intensity_note = apply_intensity(dataset.check_decodable(), space, intensity)
    if intensity_note:
        click.echo(intensity_note, err=True)
    opened = _open(storage, create=True)
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
@click.option("--timeout", type=float, callback=_seconds, help="Stop starting trials after this many seconds (at most 30 days).")
@click.option("--budget", help="The whole study's wall budget across workers and machines (30m, 2h, 1800s); spent cheap trials first, then fine-tuning.")
@click.option("--max-failures", default=3, show_default=True, callback=_at_least_one,
              help="Stop after this many failed trials in a row.")
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
@click.option("--db-down-limit", default=300.0, show_default=True, type=float, callback=_seconds,
              help="Seconds the database may stay unreachable before the workers stop.")
@click.option("--quiet", is_flag=True, help="No progress display, only warnings and the final line.")
@click.option("--seed", type=int, help="Seed of the TPE sampler, for a search that can be repeated (one worker; "
                                       "with --workers N, worker i uses seed + i, so they draw differently).")
@click.option("--in-process", is_flag=True, hidden=True, help="Run one worker in this process (used by the supervisor).")
@storage_option
def worker(study: str, n_trials: int | None, timeout: float | None, budget: str | None, max_failures: int,
           data_dir: str | None,
           gpus: str | None, workers: int | None, max_retries: int, heartbeat_interval: int, grace_period: int,
           db_down_limit: float, quiet: bool, seed: int | None, in_process: bool, storage: str) -> None:
    """Run trials of a study: one process per GPU (or --workers N on CPU), all sharing the
    study's --n-trials and --budget; start more on other machines against the same database."""
    from .workers._budget import parse_duration
    from .workers._supervisor import WorkerOptions, worker_command

    options = WorkerOptions(n_trials, timeout, max_failures, data_dir, max_retries, heartbeat_interval,
                            grace_period, db_down_limit, quiet,
                            budget=parse_duration(budget) if budget is not None else None, seed=seed)
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
@force_option
@storage_option
def export(study: str, output: str, prefer: str, force: bool, storage: str) -> None:
    """Write the best trial's config, metrics, data fingerprint, versions and ties as YAML."""
    from ._overwrite import EXPORT, study_database
    from .results._export import check_output_path, export_best, write_export
    from .study._study import load_study

    check_output_path(output, "-o")
    replacing = _check_outputs([(output, EXPORT)], "-o", force, study_database(storage))
    opened = _open(storage)
    loaded, settings = load_study(opened, study)
    document = export_best(loaded, settings, prefer=prefer, storage=opened)
    path = write_export(document, output)
    _say(replacing)
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
@click.option("--ensemble", default=0, type=click.IntRange(min=0), metavar="K",
              help="With --final: train K fold models (the study's own folds when it cross-validated with K) "
                   "and save their averaged probabilities as one model, measured once on the locked test set.")
@click.option("-o", "--output", default="model.keras", show_default=True, type=click.Path())
@force_option
@click.option("--verbose", is_flag=True, help="Show Keras progress per epoch.")
def train(config_file: str, data_dir: str | None, val_dir: str | None, final: bool, remeasure: bool, bootstrap: int,
          calibrate: bool, ensemble: int, output: str, force: bool, verbose: bool) -> None:
    """Retrain an exported config (from `medsweep export`) and save the model; no study needed.
    With --final, also writes MODEL.card.md (the model card) beside the model."""
    from ._overwrite import MODEL, MODEL_CARD, inputs, study_database
    from .results._export import check_output_path, read_export
    from .results._retrain import model_card_path, refuse_second_measurement, retrain

    path = check_output_path(output, "-o", suffix=".keras")  # before training, not after it
    if not final and not data_dir:
        raise click.UsageError("pass --data FOLDER, or --final to train on the study's own data")
    if calibrate and not final:
        raise click.UsageError("--calibrate needs --final")
    if ensemble and not final:
        raise click.UsageError("--ensemble needs --final")
    if final:
        refuse_second_measurement(config_file, read_export(config_file)[1], remeasure,
                                  "ensemble_test" if ensemble else "test")
    outputs = [(path, MODEL)] + ([(model_card_path(path), MODEL_CARD)] if final else [])
    replacing = _check_outputs(outputs, "-o", force,
                               study_database(None) + inputs([config_file], "the config this command reads"))
    done = retrain(config_file, output, data_dir=data_dir, val_dir=None if final else val_dir, final=final,
                   remeasure=remeasure, bootstrap=bootstrap, verbose=2 if verbose else 0, calibrate=calibrate,
                   ensemble=ensemble)
    _say(replacing)
    for note in done.notes:
        click.echo(f"note: {note}")
    if done.test is not None:
        from .results._format import format_calibration, format_metrics

        what = f"an ensemble of {ensemble} fold models of " if ensemble else ""
        click.echo(f"saved {done.path} ({what}trained on {done.trained_images} images); locked test set, "
                   f"{done.test['images']} images, measured once:")
        click.echo(format_metrics(done.test["metrics"], done.test["ci95"]))
        if done.calibration is not None:
            click.echo(format_calibration(done.calibration))
        click.echo(f"test metrics written to {done.export_path} and into the model; model card {done.card_path}")
    else:
        measured = ", ".join(f"{k} {v:.3f}" for k, v in done.metrics.items() if isinstance(v, float))
        click.echo(f"saved {done.path}" + (f" (validation: {measured})" if measured else ""))
    for warning in done.warnings:  # last, under the figures they qualify (also in the model and its card)
        click.echo(f"warning: {warning}")


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
@force_option
@storage_option
def evaluate(model_file: str, data: str | None, locked_test: bool, remeasure: bool, bootstrap: int, seed: int,
             exclude_seen: bool, plot_file: str | None, force: bool, storage: str) -> None:
    """Measure a saved model on labelled images: every metric with a bootstrap 95% interval, and
    how many of the images the model already saw."""
    from medsweep.objectives.evaluation import evaluate_model
    from medsweep.objectives.metrics import check_plot_path, reliability_png

    from ._overwrite import RELIABILITY_PNG, inputs, study_database
    from .results._format import format_metrics
    from .results._inputs import check_evaluation_inputs

    replacing: list[str] = []
    if plot_file:
        check_plot_path(plot_file)
        replacing = _check_outputs([(plot_file, RELIABILITY_PNG)], "--plot", force,
                                   study_database(storage) + inputs([model_file, data], "an input of this command"))
    if locked_test:
        _evaluate_locked_test(model_file, data, remeasure, bootstrap, seed, exclude_seen, plot_file, storage, replacing)
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
    if evaluation.warning:
        click.echo(f"warning: {evaluation.warning}")
    if plot_file and evaluation.reliability is not None:
        written = reliability_png(evaluation.reliability, plot_file, Path(model_file).name)
        _say(replacing)
        click.echo(f"reliability diagram written to {written}")


def _evaluate_locked_test(model_file: str, data: str | None, remeasure: bool, bootstrap: int, seed: int,
                          exclude_seen: bool, plot_file: str | None, storage: str, replacing: list[str]) -> None:
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
        if stored.get("warning"):
            click.echo(f"warning: {stored['warning']}")
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
    if result.test.get("warning"):
        click.echo(f"warning: {result.test['warning']}")
    click.echo(f"test figures written into {model_file}; a second `evaluate --test` shows them")
    if plot_file and result.reliability is not None:
        written = reliability_png(result.reliability, plot_file, Path(model_file).name)
        _say(replacing)
        click.echo(f"reliability diagram written to {written}")


@main.command()
@click.argument("model_file", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(), help="Folder for the overlay PNGs (IMAGE.gradcam.png).")
@click.option("--class", "class_name", help="Explain this class for every image instead of each image's predicted class.")
@click.option("--layer", help="Backbone layer whose feature map Grad-CAM uses (default: the deepest one at least 7x7).")
@force_option
def explain(model_file: str, images: tuple[str, ...], output_dir: str, class_name: str | None, layer: str | None,
            force: bool) -> None:
    """Write a Grad-CAM overlay PNG for each image: where the model looks for its prediction."""
    from medsweep.objectives.evaluation import explain_files, overlay_paths

    from ._overwrite import OVERLAY_PNG, inputs, study_database

    replacing = _check_outputs([(path, OVERLAY_PNG) for path in overlay_paths(images, output_dir)], "-o", force,
                               study_database(None) + inputs([model_file, *images], "an input of this command"))
    rows = explain_files(model_file, images, output_dir, class_name=class_name, layer=layer)
    _say(replacing)
    for row in rows:
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
@force_option
@storage_option
def report(study: str, output: str, png_dir: str | None, model_file: str | None, force: bool, storage: str) -> None:
    """Write one self-contained HTML report (opens offline): summary, baselines, figures, ties,
    calibration and (with --model) where the model looks."""
    from ._overwrite import REPORT, REPORT_FIGURE_PNG, inputs, study_database
    from .report._report import FIGURE_KEYS, write_study_report
    from .study._study import load_study

    protected = study_database(storage) + inputs([model_file], "the model this command reads")
    replacing = _check_outputs([(output, REPORT)], "-o", force, protected)
    if png_dir:
        replacing += _check_outputs([(Path(png_dir) / f"{key}.png", REPORT_FIGURE_PNG) for key in FIGURE_KEYS],
                                    "--png", force, protected)

    if model_file:
        from medsweep.objectives.model import read_model_metadata

        read_model_metadata(model_file)  # a missing or foreign file fails before the study is read
    loaded, settings = load_study(_open(storage), study)
    _, path, pngs = write_study_report(loaded, settings, output, png_dir, model_file=model_file)
    _say(replacing)
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
    result = run_paper(_open(storage, create=True), study, data=data, space=space, metric=metric, pruner=pruner,
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
@click.option("--force", is_flag=True, help="Write the demo into a folder that holds other files (a "
                                            "medsweep.db there is still never replaced).")
def demo(workdir: str, n_trials: int, storage: str | None, force: bool) -> None:
    """Run the whole loop on synthetic images: search, export, retrain, predict. The work folder
    must be new, empty or an earlier demo's."""
    from ._demo import run_demo

    run_demo(Path(workdir), storage, n_trials, click.echo, force=force)


if __name__ == "__main__":
    main()

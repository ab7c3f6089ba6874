"""The `medsweep` command line: each command parses its options and calls one function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from storage import DEFAULT_STORAGE_URL, STORAGE_ENV

from ._errors import USER_ERRORS

_METRICS = ("auc", "accuracy", "balanced_accuracy", "loss")
_PRUNERS = ("median", "hyperband", "none")


class _Group(click.Group):
    """Prints user mistakes as one line (password masked by the raiser) and exits 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            click.echo(f"error: {error}", err=True)
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
        from objectives import set_worker_options

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
    from storage import open_storage

    return open_storage(storage_url)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medsweep")
def main() -> None:
    """medsweep: hyperparameter search for transfer-learning medical image classifiers."""


@main.command()
@click.argument("study")
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Folder of class subfolders (TRAIN/<class>/...).")
@click.option("--val-dir", type=click.Path(), help="Separate validation folder with the same classes.")
@click.option("--validation-fraction", default=0.2, show_default=True, help="Stratified validation share when there is no --val-dir.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the stratified split.")
@click.option("--space", "space_file", type=click.Path(), help="Search space YAML; overrides the default space.")
@click.option("--metric", type=click.Choice(_METRICS), default="auc", show_default=True, help="Objective (validation).")
@click.option("--pruner", type=click.Choice(_PRUNERS), default="median", show_default=True)
@click.option("--resume", is_flag=True, help="Reuse the study if it exists instead of failing.")
@storage_option
def create(study: str, data_dir: str, val_dir: str | None, validation_fraction: float, split_seed: int,
           space_file: str | None, metric: str, pruner: str, resume: bool, storage: str) -> None:
    """Create a study on a data folder (checks every image first)."""
    from objectives import DataSpec, ImageDataset

    from ._space import SearchSpace
    from ._study import create_study

    space = SearchSpace.from_yaml(space_file) if space_file else SearchSpace.default()
    spec = DataSpec(str(Path(data_dir).expanduser().resolve()),
                    str(Path(val_dir).expanduser().resolve()) if val_dir else None,
                    validation_fraction, split_seed)
    dataset = ImageDataset.open(spec)
    dataset.check_decodable()
    created = create_study(_open(storage), study, dataset, space, metric=metric, pruner=pruner, resume=resume)
    fingerprint = dataset.fingerprint
    click.echo(f"study {created.study_name}: {fingerprint['file_count']} images, classes "
               f"{', '.join(fingerprint['class_names'])}; objective {metric}, pruner {pruner}")


@main.command()
@click.argument("study")
@click.option("--n-trials", type=click.IntRange(min=1), help="Total trials for the study, across all workers and machines.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop starting trials after this many seconds.")
@click.option("--max-failures", default=3, show_default=True, help="Stop after this many failed trials in a row.")
@click.option("--data", "data_dir", type=click.Path(), help="The study's data under another path on this machine.")
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
def worker(study: str, n_trials: int | None, timeout: float | None, max_failures: int, data_dir: str | None,
           gpus: str | None, workers: int | None, max_retries: int, heartbeat_interval: int, grace_period: int,
           db_down_limit: float, quiet: bool, in_process: bool, storage: str) -> None:
    """Run trials of a study: one process per GPU (or --workers N on CPU), all sharing the
    study's --n-trials budget; start more on other machines against the same database."""
    from ._supervisor import WorkerOptions, worker_command

    options = WorkerOptions(n_trials, timeout, max_failures, data_dir, max_retries, heartbeat_interval,
                            grace_period, db_down_limit, quiet)
    code = worker_command(storage, study, options, gpus=gpus, workers=workers, in_process=in_process,
                          echo=click.echo)
    sys.exit(code)


@main.command()
@click.argument("study")
@storage_option
def status(study: str, storage: str) -> None:
    """Show a study's trials (state, value, epochs, duration, params) and the best so far."""
    from ._status import status_report
    from ._study import load_study

    _quiet_optuna()
    loaded, settings = load_study(_open(storage), study)
    click.echo(status_report(loaded, settings.metric))


@main.command()
@click.argument("study")
@click.option("-o", "--output", default="best.yaml", show_default=True, type=click.Path(), help="Where to write the config.")
@storage_option
def export(study: str, output: str, storage: str) -> None:
    """Write the best trial's config, metrics, data fingerprint and versions as YAML."""
    from ._export import export_best, write_export
    from ._study import load_study

    _quiet_optuna()
    loaded, settings = load_study(_open(storage), study)
    document = export_best(loaded, settings)
    path = write_export(document, output)
    click.echo(f"exported trial {document['trial']} ({settings.metric} {document['objective']['value']:.4f}) to {path}")


@main.command()
@click.argument("config_file", type=click.Path())
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Folder of class subfolders to train on.")
@click.option("--val-dir", type=click.Path(), help="Validation folder to measure the final model on.")
@click.option("-o", "--output", default="model.keras", show_default=True, type=click.Path())
@click.option("--verbose", is_flag=True, help="Show Keras progress per epoch.")
def train(config_file: str, data_dir: str, val_dir: str | None, output: str, verbose: bool) -> None:
    """Retrain an exported config (from `medsweep export`) and save the model; no study needed."""
    from ._export import train_from_export

    trained = train_from_export(config_file, data_dir, output, val_dir=val_dir, verbose=2 if verbose else 0)
    for note in trained.notes:
        click.echo(f"note: {note}")
    measured = ", ".join(f"{k} {v:.3f}" for k, v in trained.metrics.items() if isinstance(v, float))
    click.echo(f"saved {trained.path}" + (f" (validation: {measured})" if measured else ""))


@main.command()
@click.argument("model_file", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
def predict(model_file: str, files: tuple[str, ...]) -> None:
    """Print each image's predicted class and probability."""
    from objectives import predict_files

    for row in predict_files(model_file, files):
        click.echo(f"{row['file']}\t{row['class']}\t{row['probability']:.4f}")


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
@click.option("--n-trials", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--storage", envvar=None, default=None, help="Storage URL (default: a fresh SQLite file in the workdir).")
def demo(workdir: str, n_trials: int, storage: str | None) -> None:
    """Run the whole loop on synthetic images: search, export, retrain, predict."""
    from ._demo import run_demo

    _quiet_optuna()
    run_demo(Path(workdir), storage, n_trials, click.echo)


if __name__ == "__main__":
    main()

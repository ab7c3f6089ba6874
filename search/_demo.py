"""`medsweep demo`: a synthetic two-class image set, a short search on SQLite, export,
retraining and prediction, all offline and in a few minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

DEMO_CLASSES = ("lesion", "normal")
DEMO_SEED = 0  # the sampler's seed: every demo run tries the same configurations

DEMO_SPACE = """\
# The demo's search space: small enough for a CPU, no downloads (random VGG19 features, which
# unlike BatchNorm backbones stay informative without pretraining).
backbone: VGG19
image_size: 32
weights: none
augmentation: false
learning_rate: {low: 0.001, high: 0.03, log: true}
epochs: {low: 5, high: 30}
batch_size: [8, 16]
dropout: {low: 0.2, high: 0.6}
fine_tune_fraction: 0.0  # heads only: keeps the demo under a minute on a CPU
frozen_warmup_epochs: 0  # nothing to warm up before when nothing but the head trains
backbone_lr_factor: 1.0  # no backbone layer trains
"""


def _synthetic_image(rng: np.random.Generator, lesion: bool, size: int = 48) -> np.ndarray:
    """Grayscale noise; a 'lesion' image has a bright blob at a random place."""
    image = rng.normal(70, 20, (size, size))
    if lesion:
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.12, size * 0.22)
        image += 60 * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)))
    return np.clip(image, 0, 255).astype(np.uint8)


def build_demo_images(folder: Path, per_class: int = 40, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write TRAIN/<class>/*.png (grayscale, names with spaces) and two unlabelled TEST images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    train = folder / "TRAIN"
    for name in DEMO_CLASSES:
        (train / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = _synthetic_image(rng, lesion=name == "lesion")
            Image.fromarray(pixels, mode="L").save(train / name / f"{name} {index:03d}.png")
    test = folder / "TEST"
    test.mkdir(parents=True, exist_ok=True)
    tests = []
    for name in DEMO_CLASSES:
        path = test / f"{name}_example.png"
        Image.fromarray(_synthetic_image(rng, lesion=name == "lesion"), mode="L").save(path)
        tests.append(path)
    return train, tests


def run_demo(workdir: Path, storage_url: str | None, n_trials: int, echo: Callable[[str], None],
             force: bool = False) -> None:
    """Build data, search, export, retrain and predict; each step prints what it did. Runs are
    repeatable: a seeded sampler, seeded training and deterministic TensorFlow ops. A work folder
    holding files an earlier demo did not create is refused unless `force` (see `_overwrite`)."""
    import os

    from medsweep.objectives.evaluation import predict_files
    from medsweep.objectives.images import DataSpec, ImageDataset
    from medsweep.storage import describe_storage, open_storage

    from ._overwrite import check_demo_workdir, mark_demo_workdir
    from .results._export import export_best, write_export
    from .results._retrain import train_from_export
    from .results._status import status_report
    from .study._space import SearchSpace
    from .study._study import create_study, load_study
    from .workers._loop import run_trials
    from .workers._objective import TrialObjective

    # Read by TensorFlow when it loads (later, in training): same inputs, same results.
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    workdir = workdir.resolve()  # the study and the printed paths work from any folder
    note = check_demo_workdir(workdir, force=force, own_database=storage_url is None)
    if note:
        echo(f"note: {note}")
    mark_demo_workdir(workdir)
    train_dir, test_files = build_demo_images(workdir / "data")
    space_file = workdir / "space.yaml"
    space_file.write_text(DEMO_SPACE)
    own_database = storage_url is None
    if own_database:
        storage_url = f"sqlite:///{workdir / 'medsweep.db'}"
    storage = open_storage(storage_url)
    if own_database:
        # Start the demo's own study afresh; the file stays, with any study the user added to it
        # (the quick start's) untouched.
        import optuna

        if "demo" in optuna.get_all_study_names(storage):
            optuna.delete_study(study_name="demo", storage=storage)
    echo(f"1/5 data: {train_dir} (2 classes x 40 synthetic images); storage: {describe_storage(storage.url)}")
    dataset = ImageDataset.open(DataSpec(str(train_dir)))
    create_study(storage, "demo", dataset, SearchSpace.from_yaml(space_file), metric="loss", resume=True)
    # AUC reaches 1.0 on these easy images; validation log loss still tells a well-fitted,
    # confident model from one that barely moved, so the demo minimises it.
    echo(f"2/5 search: {n_trials} trials over {space_file}, minimising validation log loss")
    study, settings = load_study(storage, "demo", sampler_seed=DEMO_SEED)
    run_trials(storage, study, TrialObjective(settings, dataset), n_trials=n_trials,
               on_trial=lambda t: echo(f"    trial {t.number}: {t.state.name.lower()}"
                                       + (f", loss {t.value:.3f}" if t.value is not None else "")))
    echo(status_report(study, settings.metric))
    export_path = write_export(export_best(study, settings, storage=storage), workdir / "best.yaml")
    echo(f"3/5 exported the best trial to {export_path}")
    trained = train_from_export(export_path, str(train_dir), workdir / "model.keras")
    echo(f"4/5 retrained on all {dataset.fingerprint['file_count']} images, saved {trained.path}")
    echo("5/5 predictions:")
    for row in predict_files(trained.path, test_files):
        echo(f"    {row['file']}\t{row['class']}\t{row['probability']:.3f}")

"""Input pipeline overhead: epoch time of a frozen MobileNet trial (full model, no feature
cache) fed three ways, on the survey's brain_mri images:

- medsweep: files decoded and resized once per image size (`ImageDataset.arrays`), then the
  `tf.data` pipeline `train_trial` uses (shuffle, batch, parallel cast, prefetch);
- in memory: the same images already as one float32 tensor, passed straight to `fit`;
- per-epoch decode: a loader that reads, decodes and resizes every file in every epoch, as the
  survey's template does with `ImageDataGenerator.flow_from_directory`.

Each feed trains its own model; after one untimed epoch each (tracing), epochs are run in
turn, one per feed, and the table shows each feed's median and fastest epoch.

    python -m bench.pipeline [--epochs 8] [--size 224] [--data ../shared/data/brain_mri]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import EpochTimer, data_parser, emit, median, parse_data_args, table


class PerEpochDecoder:
    """A Keras PyDataset that opens and decodes each batch's files every epoch."""

    def __new__(cls, paths: list[Path], labels: np.ndarray, size: int, batch_size: int, seed: int) -> Any:
        import keras

        from medsweep.objectives.images import decode_image

        class _Loader(keras.utils.PyDataset):
            def __init__(self) -> None:
                super().__init__(workers=1, use_multiprocessing=False)
                self.order = np.arange(len(paths))
                self.rng = np.random.default_rng(seed)
                self.rng.shuffle(self.order)

            def __len__(self) -> int:
                return (len(paths) + batch_size - 1) // batch_size

            def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
                chosen = self.order[index * batch_size:(index + 1) * batch_size]
                images = np.stack([decode_image(paths[i], size) for i in chosen]).astype(np.float32)
                return images, labels[chosen].astype(np.float32)[:, None]

            def on_epoch_end(self) -> None:
                self.rng.shuffle(self.order)

        return _Loader()


def _fit(model: Any, data: Any, epochs: int, **kwargs: Any) -> list[float]:
    timer = EpochTimer()
    model.fit(data, epochs=epochs, callbacks=[timer], verbose=0, **kwargs)
    return timer.seconds


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=5)
    args = parse_data_args(parser)

    import keras
    import tensorflow as tf

    from medsweep.objectives import TrialConfig
    from medsweep.objectives.images import DataSpec, ImageDataset
    from medsweep.objectives.model import build_model
    from medsweep.objectives.training import make_dataset

    config = TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(args.weights), image_size=args.size,
                         augmentation=False, batch_size=args.batch_size, learning_rate=1e-3, feature_cache=False)
    spec = DataSpec(str(args.data), validation_fraction=0.2, split_seed=0)

    def fresh_model() -> Any:
        keras.utils.set_random_seed(0)
        return build_model(config, 2)

    started = time.perf_counter()
    dataset = ImageDataset.open(spec)
    data = dataset.arrays(args.size)
    decode_s = time.perf_counter() - started
    print(f"  scan + decode + resize {len(data.x_train) + len(data.x_val)} files once: {decode_s:.2f} s", flush=True)

    from medsweep.objectives.images import stratified_split

    train_index, _ = stratified_split(dataset.train_files.labels, spec.validation_fraction, spec.split_seed)
    paths = [dataset.train_files.paths[i] for i in train_index]
    labels = np.asarray(dataset.train_files.labels)[train_index]
    tensor = tf.constant(data.x_train.astype(np.float32))
    targets = tf.constant(data.y_train.astype(np.float32)[:, None])
    feeds: dict[str, tuple[Any, dict[str, Any]]] = {
        "medsweep (decode once, tf.data)": (
            make_dataset(data.x_train, data.y_train, 2, args.batch_size, shuffle=True, seed=0), {}),
        "in-memory float32 tensors": (tensor, {"y": targets, "batch_size": args.batch_size, "shuffle": True}),
        "per-epoch decode from disk": (PerEpochDecoder(paths, labels, args.size, args.batch_size, 0), {}),
    }
    # One model per feed, and epochs interleaved feed by feed, so load from other processes on
    # a shared machine falls on all three alike.
    models = {}
    for name, (feed, kwargs) in feeds.items():
        models[name] = fresh_model()
        _fit(models[name], feed, 1, **kwargs)  # traces the model; not timed
    runs: dict[str, list[float]] = {name: [] for name in feeds}
    for _ in range(args.epochs):
        for name, (feed, kwargs) in feeds.items():
            runs[name] += _fit(models[name], feed, 1, **kwargs)
    for name, seconds in runs.items():
        print(f"  {name}: {[round(s, 3) for s in seconds]}", flush=True)

    epoch = {name: median(seconds) for name, seconds in runs.items()}
    memory = epoch["in-memory float32 tensors"]
    rows = [[name, value, value / memory] for name, value in epoch.items()]
    print()
    print(table(["feed", "epoch s (median)", "vs in-memory", "fastest epoch s"],
                [row + [min(runs[row[0]])] for row in rows]))
    print(f"(decoding the {len(data.x_train) + len(data.x_val)} files once took {decode_s:.2f} s; "
          f"{len(data.x_train)} training images, batch {args.batch_size}, {args.size} px)")
    overhead = epoch["medsweep (decode once, tf.data)"] / memory - 1
    emit({"bench": "pipeline", "medsweep_epoch_s": epoch["medsweep (decode once, tf.data)"],
          "in_memory_epoch_s": memory, "per_epoch_decode_s": epoch["per-epoch decode from disk"],
          "overhead_vs_memory": overhead, "target_overhead": 0.10, "decode_once_s": decode_s,
          "per_epoch_decode_vs_memory": epoch["per-epoch decode from disk"] / memory})


if __name__ == "__main__":
    main()

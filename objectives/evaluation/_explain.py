"""Where the model looks: Grad-CAM (Selvaraju et al. 2017) for medsweep's models, overlays as PNG.

medsweep's model is a chain: image -> BackbonePreprocess -> a nested keras.applications backbone
-> pooling -> Dense -> Dropout -> Dense output (-> TemperatureScaling). Grad-CAM needs a feature map
inside the nested backbone, which the maintained libraries do not reach: tf-keras-vis is written
for tf.keras (Keras 2) and lists nested ("cascading") models as a known problem, so this is a
small implementation on the TensorFlow backend, tested on a model that must find a planted square.

The class score is the output layer's logit (before the sigmoid or softmax, and before any
temperature layer), so saturated probabilities do not flatten the map. The feature map is the
deepest one inside the backbone that is still at least 7 x 7: the backbone's last map at 224 px
(standard Grad-CAM) and a finer one for small images, where the last map is 1 x 1 or 2 x 2."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._errors import DataError, ObjectiveError
from .._keras import import_keras
from ..metrics import class_probabilities, png_mark

MIN_MAP_SIDE = 7
OVERLAY_PNG_KIND = "Grad-CAM overlay"  # the mark in each overlay PNG, so a rerun may replace it
# Anchors of a perceptually ordered blue -> cyan -> yellow -> red colour map (no matplotlib needed).
_COLOUR_ANCHORS = np.array([[0.0, 0, 0, 130], [0.25, 0, 110, 255], [0.5, 40, 220, 200],
                            [0.75, 255, 220, 0], [1.0, 220, 20, 0]])


class ExplainError(ObjectiveError):
    """A model that is not a medsweep chain, or a layer or class that does not exist."""


@dataclass
class Explanation:
    """One image's Grad-CAM heatmap (model input size, 0 to 1) and the class it explains."""

    heatmap: np.ndarray
    class_index: int
    probabilities: np.ndarray
    layer: str


def _backbone_of(model: Any) -> tuple[int, Any]:
    keras = import_keras()

    for index, layer in enumerate(model.layers):
        if isinstance(layer, keras.Model):
            return index, layer
    raise ExplainError(f"model {model.name!r} has no nested backbone; Grad-CAM needs a model built by medsweep")


def _ensemble_members(model: Any) -> list[Any]:
    """The member models of an ensemble (`model.average_models`), or [] for a single model."""
    keras = import_keras()
    if not any(layer.name == "average" for layer in model.layers):
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def _ensemble_grad_cam(model: Any, members: list[Any], images: np.ndarray, class_index: int | Sequence[int] | None,
                       layer: str | None) -> list[Explanation]:
    """An ensemble's Grad-CAM: each member's heatmap for the class the ensemble explains, averaged
    (members weigh alike in the prediction, so they do here), with the ensemble's probabilities."""
    probabilities = class_probabilities(np.asarray(model(np.asarray(images, dtype=np.float32), training=False)))
    chosen = probabilities.argmax(axis=1) if class_index is None else class_index
    per_member = [grad_cam(member, images, chosen, layer) for member in members]
    explanations = []
    for row, parts in zip(probabilities, zip(*per_member)):
        heatmap = np.mean([part.heatmap for part in parts], axis=0)
        top = float(heatmap.max())
        explanations.append(Explanation((heatmap / top if top > 0 else heatmap).astype(np.float32), parts[0].class_index,
                                        row.astype(np.float64), parts[0].layer))
    return explanations


def default_target_layer(backbone: Any, min_side: int = MIN_MAP_SIDE) -> str:
    """The deepest layer of the backbone whose feature map is at least `min_side` on each side
    (its last layer when none is, e.g. a tiny input)."""
    keras = import_keras()
    for layer in reversed(backbone.layers):
        if isinstance(layer, keras.layers.ZeroPadding2D):  # padding adds a border, not a feature
            continue
        shape = tuple(layer.output.shape)
        if len(shape) == 4 and shape[1] is not None and min(shape[1], shape[2]) >= min_side:
            return layer.name
    return backbone.layers[-1].name


def _split_head(model: Any, backbone_index: int) -> tuple[list[Any], list[Any], Any]:
    """(layers before the backbone, layers between it and the output, the output Dense layer)."""
    keras = import_keras()

    before = [layer for layer in model.layers[:backbone_index] if not isinstance(layer, keras.layers.InputLayer)]
    after: list[Any] = []
    for layer in model.layers[backbone_index + 1:]:
        if layer.name == "output":
            if not isinstance(layer, keras.layers.Dense):
                break
            return before, after, layer
        after.append(layer)
    raise ExplainError(f"model {model.name!r} has no Dense layer named 'output' after its backbone; "
                       "explain works on models saved by medsweep")


def grad_cam(model: Any, images: np.ndarray, class_index: int | Sequence[int] | None = None,
             layer: str | None = None) -> list[Explanation]:
    """Grad-CAM heatmaps of uint8 images already at the model's input size; `class_index` None
    explains each image's predicted class."""
    import_keras()
    import tensorflow as tf

    members = _ensemble_members(model)
    if members:
        return _ensemble_grad_cam(model, members, images, class_index, layer)
    backbone_index, backbone = _backbone_of(model)
    before, after, output_layer = _split_head(model, backbone_index)
    target = layer or default_target_layer(backbone)
    try:
        target_output = backbone.get_layer(target).output
    except ValueError:
        raise ExplainError(f"layer {target!r} is not in backbone {backbone.name!r}; leave --layer out to use "
                           f"the default ({default_target_layer(backbone)})") from None
    keras = import_keras()
    feature_model = keras.Model(backbone.inputs, [target_output, backbone.output])
    inputs = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    # The whole model's output, so a temperature layer after the output is reflected in the probabilities.
    probabilities = class_probabilities(np.asarray(model(inputs, training=False)))
    x = inputs
    for step in before:
        x = step(x)
    with tf.GradientTape() as tape:
        feature_map, x = feature_model(x, training=False)
        for step in after:
            x = step(x, training=False)
        # float32 like the output layer itself, also under a mixed_float16 policy
        logits = tf.matmul(tf.cast(x, tf.float32), tf.cast(output_layer.kernel, tf.float32)) \
            + tf.cast(output_layer.bias, tf.float32)
        # sigmoid: the positive logit, negated to explain the negative class
        scores_by_class = tf.concat([-logits, logits], axis=1) if logits.shape[-1] == 1 else logits
        count = int(scores_by_class.shape[1])
        if class_index is None:
            chosen = probabilities.argmax(axis=1)
        else:
            chosen = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (len(images),)).copy()
            if chosen.min() < 0 or chosen.max() >= count:
                raise ExplainError(f"class index {class_index} is out of range; the model has {count} classes")
        score = tf.reduce_sum(tf.gather(scores_by_class, chosen, axis=1, batch_dims=1))
    gradients = tape.gradient(score, feature_map)
    # Each channel weighted by its spatially averaged gradient; only evidence for the class counts.
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * tf.cast(feature_map, tf.float32), axis=-1))
    size = int(images.shape[1]), int(images.shape[2])
    cams = tf.image.resize(cams[..., None], size, method="bilinear")[..., 0].numpy()
    explanations = []
    for cam, index, row in zip(cams, chosen, probabilities):
        top = float(cam.max())
        heatmap = (cam / top if top > 0 else np.zeros_like(cam)).astype(np.float32)
        explanations.append(Explanation(heatmap, int(index), row.astype(np.float64), target))
    return explanations


def colourise(heatmap: np.ndarray) -> np.ndarray:
    """A 0-1 heatmap as uint8 RGB through a blue-to-red colour map."""
    values = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, 1.0)
    channels = [np.interp(values, _COLOUR_ANCHORS[:, 0], _COLOUR_ANCHORS[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """The heatmap, resized to the image and coloured, blended over it (uint8 RGB)."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    height, width = image.shape[:2]
    resized = np.asarray(Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), mode="L")
                         .resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    # Weak evidence stays transparent so the anatomy underneath remains readable.
    alpha = (opacity * resized)[..., None]
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colourise(resized).astype(np.float64)
    return np.clip(blended, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 RGB pixels encoded as PNG, marked as medsweep's Grad-CAM overlay."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", pnginfo=png_mark(OVERLAY_PNG_KIND))
    return buffer.getvalue()


def png_data_uri(pixels: np.ndarray) -> str:
    """A data: URI of the pixels as PNG, to embed in an HTML report that must open offline."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def check_images(paths: Sequence[str | Path]) -> list[Path]:
    """Every path exists and decodes, checked before TensorFlow loads; one-line DataError otherwise."""
    from ..images import decode_image

    checked = []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            raise DataError(f"{path} is a folder; explain takes image files: pass them, e.g. {path}/*.png")
        if not path.is_file():
            raise DataError(f"image {path} does not exist; pass image files (PNG, JPEG, DICOM, TIFF, BMP, WebP)")
        decode_image(path, 8)
        checked.append(path)
    return checked


def _output_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for index, path in enumerate(paths):
        name = f"{path.stem}.gradcam.png"
        names.append(name if name not in names else f"{path.stem}-{index}.gradcam.png")
    return names


def overlay_paths(image_paths: Sequence[str | Path], output_dir: str | Path) -> list[Path]:
    """Where `explain_files` writes each image's overlay (so a command can check them first)."""
    output = Path(output_dir).expanduser()
    return [output / name for name in _output_names([Path(p).expanduser() for p in image_paths])]


def explain_files(model_path: str | Path, image_paths: Sequence[str | Path], output_dir: str | Path, *,
                  class_name: str | None = None, layer: str | None = None) -> list[dict[str, Any]]:
    """Write one Grad-CAM overlay PNG per image into `output_dir`; each row names the file,
    the predicted class and probability, and the class explained."""
    from ..images import decode_full_size, decode_images, model_decoding
    from ..model import load_model, read_model_metadata

    paths = check_images(image_paths)
    metadata = read_model_metadata(model_path)
    # The model's own decoding (a study's --window), as `predict` and `evaluate` use it.
    decoding = model_decoding(metadata)
    class_names = list(metadata["class_names"])
    if class_name is not None and class_name not in class_names:
        raise ExplainError(f"class {class_name!r} is not one of the model's classes {class_names}")
    output = Path(output_dir).expanduser()
    if output.exists() and not output.is_dir():
        raise DataError(f"output {output} is a file; pass a folder for the overlays with -o")
    model, _ = load_model(model_path)
    size = int(model.input_shape[1])
    explanations = grad_cam(model, decode_images(paths, size, decoding),
                            None if class_name is None else class_names.index(class_name), layer=layer)
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, target, explanation in zip(paths, overlay_paths(paths, output), explanations):
        target.write_bytes(png_bytes(overlay(decode_full_size(path, decoding), explanation.heatmap)))
        predicted = int(explanation.probabilities.argmax())
        rows.append({"file": str(path), "overlay": str(target), "class": class_names[predicted],
                     "probability": float(explanation.probabilities[predicted]),
                     "explained": class_names[explanation.class_index], "layer": explanation.layer})
    return rows


def example_rows(labels: Sequence[int], probabilities: np.ndarray, threshold: float = 0.5,
                 per_row: int = 4) -> dict[str, list[int]]:
    """Indices of validation images for the report's three rows (binary): `right` (most confident
    correct), `false positives` and `false negatives` (most confident errors first)."""
    y_true = np.asarray(labels, dtype=np.int64)
    positive = np.asarray(probabilities, dtype=np.float64)
    positive = positive[:, 1] if positive.ndim == 2 else positive
    predicted = (positive >= threshold).astype(np.int64)
    confidence = np.abs(positive - threshold)

    def most_confident(mask: np.ndarray) -> list[int]:
        chosen = np.flatnonzero(mask)
        return [int(i) for i in chosen[np.argsort(-confidence[chosen], kind="stable")][:per_row]]

    return {"right": most_confident(predicted == y_true),
            "false positives": most_confident((predicted == 1) & (y_true == 0)),
            "false negatives": most_confident((predicted == 0) & (y_true == 1))}


def example_overlays(model: Any, images: np.ndarray, labels: Sequence[int], class_names: Sequence[str], *,
                     threshold: float = 0.5, per_row: int = 4) -> dict[str, list[dict[str, Any]]]:
    """The report's three rows for a two-class model's validation images (uint8, at the model's size):
    `right`, `false positives`, `false negatives`, each image a Grad-CAM overlay of its predicted class
    as a PNG data URI, with its true class and P(positive); a row may be empty."""
    from ._predict import predict_probabilities

    if len(class_names) != 2:
        raise ExplainError(f"the three example rows need two classes, the model has {len(class_names)}")
    probabilities = predict_probabilities(model, images)
    rows = example_rows(labels, probabilities, threshold=threshold, per_row=per_row)
    chosen = sorted({index for indices in rows.values() for index in indices})
    if not chosen:
        return {name: [] for name in rows}
    predicted = [int(probabilities[i, 1] >= threshold) for i in chosen]
    maps = dict(zip(chosen, grad_cam(model, np.asarray(images)[chosen], predicted)))
    return {name: [{"index": i, "uri": png_data_uri(overlay(np.asarray(images[i]), maps[i].heatmap)),
                    "true": class_names[int(labels[i])], "probability": float(probabilities[i, 1])}
                   for i in indices]
            for name, indices in rows.items()}

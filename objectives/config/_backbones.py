"""The backbone registry: which Keras application to build, how to preprocess for it and
which weights file it expects. Pure data here; Keras is imported only when building."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .._errors import BackboneError
from .._text import quoted


@dataclass(frozen=True)
class Backbone:
    """One Keras application: constructor, preprocessing module, sizes and weight file names."""

    name: str
    module: str  # keras.applications.<module>, which also holds preprocess_input
    constructor: str
    default_size: int
    min_size: int
    weights_file: str  # the file name Keras caches for weights="imagenet", include_top=False
    has_alpha: bool = False
    weight_alphas: tuple[float, ...] = ()  # the widths Keras ships ImageNet weights for (has_alpha only)

    def check_alpha_has_weights(self, alpha: float) -> None:
        """Refuse a width Keras has no pretrained weights for (it would fail, or name a file that does not exist)."""
        if self.has_alpha and alpha not in self.weight_alphas:
            raise BackboneError(
                f"{self.name} has pretrained weights only for alpha {', '.join(f'{a:g}' for a in self.weight_alphas)}, "
                f"not {alpha:g}; choose one of those, or set weights: none to train from scratch"
            )

    def constructor_function(self) -> Callable[..., Any]:
        module = importlib.import_module(f"keras.applications.{self.module}")
        return getattr(module, self.constructor)

    def preprocess_function(self) -> Callable[[Any], Any]:
        """The application's own `preprocess_input` (works on tensors as well as arrays)."""
        module = importlib.import_module(f"keras.applications.{self.module}")
        return module.preprocess_input

    def expected_weights_file(self, image_size: int, alpha: float) -> str:
        """The file Keras would download for these settings; looked up in a weights folder."""
        if self.name == "MobileNet":
            rows = image_size if image_size in (128, 160, 192, 224) else 224
            return f"mobilenet_{_mobilenet_alpha_text(alpha)}_{rows}_tf_no_top.h5"
        if self.name == "MobileNetV2":
            rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
            return (
                "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
                f"{alpha:g}_{rows}_no_top.h5"
            )
        return self.weights_file

    def candidate_weights_files(self, image_size: int, alpha: float) -> list[str]:
        """Acceptable file names, best first: without the top, convolution weights do not
        depend on the input size, so any size's no-top file of the right alpha fits."""
        names = [self.expected_weights_file(image_size, alpha)]
        if self.has_alpha:
            for rows in (224, 192, 160, 128, 96):
                name = self.expected_weights_file(rows, alpha)
                if name not in names:
                    names.append(name)
        return names


def _mobilenet_alpha_text(alpha: float) -> str:
    return {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}.get(alpha, f"{alpha:g}")


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("InceptionV3", "inception_v3", "InceptionV3", 299, 75,
                 "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("DenseNet201", "densenet", "DenseNet201", 224, 32,
                 "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("ResNet152V2", "resnet_v2", "ResNet152V2", 224, 32,
                 "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("Xception", "xception", "Xception", 299, 71,
                 "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("VGG19", "vgg19", "VGG19", 224, 32,
                 "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("MobileNet", "mobilenet", "MobileNet", 224, 32,
                 "mobilenet_1_0_224_tf_no_top.h5", has_alpha=True, weight_alphas=(0.25, 0.5, 0.75, 1.0)),
        Backbone("MobileNetV2", "mobilenet_v2", "MobileNetV2", 224, 32,
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                 has_alpha=True, weight_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
        Backbone("ResNet50V2", "resnet_v2", "ResNet50V2", 224, 32,
                 "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("EfficientNetV2B0", "efficientnet_v2", "EfficientNetV2B0", 224, 32,
                 "efficientnetv2-b0_notop.h5"),
        Backbone("ConvNeXtTiny", "convnext", "ConvNeXtTiny", 224, 32,
                 "convnext_tiny_notop.h5"),
    )
}


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by name; an unknown name lists the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(BACKBONES)
        raise BackboneError(
            f"unknown backbone {quoted(name)}; choose one of: {known}"
        ) from None


def resolve_weights(backbone: Backbone, weights: str, image_size: int, alpha: float) -> str | None:
    """Turn the config's `weights` into what Keras accepts: "imagenet", None or a file path.

    A folder is searched for the file Keras itself would download, so an air-gapped cluster can
    mirror ~/.keras/models into a shared folder."""
    if weights == "imagenet":
        return "imagenet"
    if weights == "none":
        return None
    path = Path(weights).expanduser()
    if path.is_dir():
        backbone.check_alpha_has_weights(alpha)  # else the hint below names a file Keras never shipped
        expected = backbone.expected_weights_file(image_size, alpha)
        found = [path / name for name in backbone.candidate_weights_files(image_size, alpha)
                 if (path / name).is_file()]
        if not found:
            raise BackboneError(
                f"weights folder {path} has no {expected} for {backbone.name}"
                f" (alpha {alpha:g}, {image_size} px); copy that file there or set weights: none"
            )
        path = found[0]
    elif not path.is_file():
        raise BackboneError(
            f"weights file {path} does not exist; expected {backbone.expected_weights_file(image_size, alpha)}"
            " or a folder holding it, or use weights: imagenet | none"
        )
    try:
        with path.open("rb") as handle:
            handle.read(8)
    except OSError as error:
        raise BackboneError(f"weights file {path} cannot be read ({error.strerror}); check its permissions") from None
    return str(path)


def keras_weights_folder() -> Path:
    """The folder Keras downloads ImageNet weights into and finds them in: $KERAS_HOME/models,
    else ~/.keras/models; like Keras, /tmp/.keras/models when that folder is not writable."""
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path.home()
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    # keras.utils.get_file's own fallback (Keras creates a missing folder, so only an existing
    # read-only one sends it to /tmp).
    if base.exists() and not os.access(base, os.W_OK):
        base = Path("/tmp") / ".keras"
    return base / "models"


@dataclass(frozen=True)
class WeightsFile:
    """One weights file a trial would load: its name, the folder it is looked for in, and
    where it was found on this machine (None: missing)."""

    backbone: str
    name: str
    folder: Path
    found: Path | None
    imagenet: bool  # looked for in Keras' cache, which downloads it when missing


def find_weights_file(backbone: Backbone, weights: str, image_size: int, alpha: float) -> WeightsFile | None:
    """Where the weights `weights` names for this backbone lie on this machine (None for
    weights: none); never imports Keras."""
    if weights == "none":
        return None
    expected = backbone.expected_weights_file(image_size, alpha)
    if weights == "imagenet":
        folder = keras_weights_folder()
        return WeightsFile(backbone.name, expected, folder, folder / expected if (folder / expected).is_file() else None,
                           imagenet=True)
    path = Path(weights).expanduser()
    if path.is_dir() or not path.suffix:
        found = [path / name for name in backbone.candidate_weights_files(image_size, alpha) if (path / name).is_file()]
        return WeightsFile(backbone.name, expected, path, found[0] if found else None, imagenet=False)
    return WeightsFile(backbone.name, path.name, path.parent, path if path.is_file() else None, imagenet=False)

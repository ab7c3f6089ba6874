"""Reading images as hospitals store them: PNG, JPEG, BMP and WebP (Pillow), TIFF (tifffile)
and DICOM (pydicom, with pylibjpeg for compressed transfer syntaxes), recognised by content.

Every format ends in the same size x size x 3 uint8 array by one documented rule
(docs/image-formats.md):
- 8-bit images keep their stored values (0-255);
- images with more than 8 bits (16-bit PNG/TIFF, float TIFF, DICOM) are kept in floating
  point until one linear scaling to 0-255: the window (`--window C,W`, else a DICOM file's own
  VOI LUT or Window Center/Width) or, without one, the image's own minimum to maximum;
- a study window applies to every grayscale image, DICOM values after the Modality LUT
  (rescale slope and intercept, e.g. Hounsfield units);
- DICOM MONOCHROME1 and TIFF min-is-white are inverted, so bright means dense as in a viewer.

pydicom and tifffile are imported only when such a file is met. Identifying DICOM tags are
read only to group images (hashed at once) and never kept or printed."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._errors import DataError
from .._text import is_utf8_name, shown_path

# Bump when a change of decoding changes pixel values: decoded-image files keyed on it refill.
DECODE_RULE = 2
# `create` refuses data where more than this share of the (non-hidden) files cannot be read.
MAX_UNREADABLE_SHARE = 0.10
# Names ignored silently (still counted in the skip report): OS and PACS-export clutter.
SYSTEM_FILE_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "dicomdir"})
# DICOM header keywords `--group-by` accepts: they name a patient, a study or a series.
GROUP_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber")

HIDDEN = "hidden or system file"
NOT_AN_IMAGE = "not an image medsweep reads (PNG, JPEG, DICOM, TIFF, BMP, WebP)"
NO_PIXELS = "DICOM without pixel data"
MULTI_FRAME = "multi-frame DICOM"
UNSUPPORTED_SYNTAX = "DICOM with an unsupported transfer syntax"
DAMAGED_DICOM = "damaged DICOM"
MULTI_PAGE_TIFF = "multi-page TIFF"
OUTSIDE = "file beside the class folders"
NOT_UTF8_NAME = "file name that is not UTF-8 (rename it)"
DAMAGED_TIFF = "damaged TIFF"

_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom", ".dicom": "dicom",
             ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp", ".webp": "webp"}


@dataclass(frozen=True)
class Decoding:
    """The study-wide decoding settings: an optional fixed window (center, width)."""

    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.window is not None:
            center, width = (float(v) for v in self.window)
            if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
                raise DataError(f"window {center:g},{width:g} needs a finite center and a width above 0, "
                                "e.g. --window 40,400")
            object.__setattr__(self, "window", (center, width))

    def to_dict(self) -> dict[str, Any]:
        return {"window": list(self.window) if self.window else None, "rule": DECODE_RULE}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "Decoding":
        window = (values or {}).get("window")
        return cls(tuple(window) if window else None)  # type: ignore[arg-type]

    def key(self) -> str:
        """A short hash naming these settings (and the rule version) in cache file names."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def model_decoding(metadata: dict[str, Any]) -> Decoding:
    """The decoding a saved model was trained with (its fingerprint's `decoding`; none before)."""
    return Decoding.from_dict((metadata.get("fingerprint") or {}).get("decoding"))


def parse_window(text: str | Sequence[float] | None) -> tuple[float, float] | None:
    """`"40,400"` (center,width, the units of the pixel values after rescale) as a pair."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        values = list(text)
    else:
        values = text.replace(" ", "").split(",")
    try:
        center, width = (float(v) for v in values)
    except (TypeError, ValueError):
        raise DataError(f"window {text!r} is not CENTER,WIDTH; pass two numbers, e.g. --window 40,400 "
                        "(CT soft tissue)") from None
    return Decoding((center, width)).window


@dataclass(frozen=True)
class Unread:
    """A file that was not read, why (a short reason that is counted) and the details."""

    path: Path
    reason: str
    detail: str = ""

    @property
    def hidden(self) -> bool:
        """Reported, but not counted as unreadable: clutter, not an image that failed."""
        return self.reason in (HIDDEN, OUTSIDE)


def is_hidden(path: Path, root: Path) -> bool:
    """Dot files and folders, and the OS and PACS clutter of SYSTEM_FILE_NAMES."""
    relative = path.relative_to(root).parts if path.is_relative_to(root) else (path.name,)
    return any(part.startswith(".") for part in relative) or path.name.lower() in SYSTEM_FILE_NAMES


def sniff(path: Path) -> str | None:
    """The image format by content (magic bytes), or None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror}); check its permissions") from None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if path.suffix.lower() in (".dcm", ".dicom"):
        return "dicom"  # DICOM without the 128-byte preamble; pydicom reads it with force=True
    return None


def check_file(path: Path) -> Unread | None:
    """Why `path` cannot be read as one image (None when it can), from its header only."""
    kind = sniff(path)
    if kind is None:
        named = _SUFFIXES.get(path.suffix.lower())
        detail = f"named like a {named.upper()} file but its content is not one" if named else \
            "its content is none of PNG, JPEG, DICOM, TIFF, BMP or WebP"
        return Unread(path, NOT_AN_IMAGE, detail)
    if kind == "dicom":
        return _check_dicom(path)
    if kind == "tiff":
        return _check_tiff(path)
    return None


def list_images(folder: Path, root: Path | None = None) -> tuple[list[Path], list[Unread]]:
    """The readable images under `folder` (sorted, by content) and every file that is not read."""
    root = root or folder
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    hidden = [Unread(p, HIDDEN) for p in files if is_hidden(p, root)]
    # A name in another encoding (Latin-1 from an old archive) cannot be stored, hashed or printed
    # as text; skipped and reported like any unreadable file, so the one-line summary names it.
    misnamed = [Unread(p, NOT_UTF8_NAME, "rename it, e.g. convmv -f latin1 -t utf8 --notest FILE")
                for p in files if not is_hidden(p, root) and not is_utf8_name(p)]
    candidates = [p for p in files if not is_hidden(p, root) and is_utf8_name(p)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = list(pool.map(check_file, candidates))
    images = [p for p, problem in zip(candidates, problems) if problem is None]
    unread = hidden + misnamed + [problem for problem in problems if problem is not None]
    return images, unread


def summarize_unread(unread: Sequence[Unread], root: Path | None = None, examples: int = 2) -> str:
    """`3 not read: 2 <reason> (e.g. a.txt, b.csv); 1 <reason> (e.g. c.dcm)`; hidden ones last."""
    by_reason: dict[str, list[Unread]] = {}
    for item in unread:
        by_reason.setdefault(item.reason, []).append(item)
    ordered = sorted(by_reason.items(), key=lambda entry: (entry[0] in (HIDDEN, OUTSIDE), -len(entry[1]), entry[0]))
    parts = []
    for reason, items in ordered:
        names = ", ".join(_shown(item.path, root) for item in items[:examples])
        more = ", ..." if len(items) > examples else ""
        parts.append(f"{len(items)} {reason} (e.g. {names}{more})")
    return "; ".join(parts)


def unread_counts(unread: Sequence[Unread]) -> dict[str, int]:
    """Files not read, counted per reason (stored with the data fingerprint; no names)."""
    counts: dict[str, int] = {}
    for item in unread:
        counts[item.reason] = counts.get(item.reason, 0) + 1
    return dict(sorted(counts.items()))


def refuse_unreadable(read: int, unread: Sequence[Unread], where: str, root: Path | None = None) -> None:
    """Stop when more than MAX_UNREADABLE_SHARE of the non-hidden files cannot be read."""
    failed = [item for item in unread if not item.hidden]
    total = read + len(failed)
    if failed and len(failed) > MAX_UNREADABLE_SHARE * total:
        raise DataError(
            f"{len(failed)} of {total} files in {where} cannot be read ({summarize_unread(failed, root)}), more "
            f"than {MAX_UNREADABLE_SHARE:.0%}; fix or remove them, or pass --skip-unreadable to `medsweep create` "
            "to train on the rest"
        )


def _shown(path: Path, root: Path | None) -> str:
    if root is not None and path.is_relative_to(root):
        return shown_path(path.relative_to(root).as_posix())
    return shown_path(path)


# DICOM -------------------------------------------------------------------------------------

_silenced = False


def _silence_pydicom() -> None:
    """pydicom's warnings and log lines can quote header values (a birth date with a bad VR):
    none may reach a terminal or a worker's log. Filters, not `catch_warnings`, which is not
    thread-safe and files are read in threads."""
    global _silenced
    if not _silenced:
        import logging

        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        for module in (r"pydicom(\.|$)", r"objectives\._formats$"):
            warnings.filterwarnings("ignore", module=module)
        _silenced = True


def _read_dicom(path: Path, **options: Any) -> Any:
    import pydicom

    _silence_pydicom()
    try:
        return pydicom.dcmread(path, force=True, **options)
    except Exception as error:  # a parser of arbitrary bytes raises many kinds; each means a damaged header
        raise _DicomProblem(Unread(path, DAMAGED_DICOM, f"pydicom cannot read its header ({type(error).__name__})"))


class _DicomProblem(Exception):
    def __init__(self, unread: Unread) -> None:
        super().__init__(unread.detail)
        self.unread = unread


def _dicom_problem(path: Path, dataset: Any) -> Unread | None:
    if not any(name in dataset for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = dataset.get("Modality") or "non-image"
        return Unread(path, NO_PIXELS, f"a {kind} object without pixel data (e.g. a report or a plan)")
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        return Unread(path, MULTI_FRAME, f"{frames} frames; medsweep reads one image per file, so export "
                                         "single frames")
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            return Unread(path, UNSUPPORTED_SYNTAX, f"transfer syntax {syntax.name} ({syntax}) has no decoder in "
                                                    "pydicom; convert the file to an uncompressed syntax")
        if not decoder.is_available:
            return Unread(path, UNSUPPORTED_SYNTAX, f"transfer syntax {syntax.name} needs a decoder plugin that is "
                                                    "not installed (pip install pylibjpeg pylibjpeg-libjpeg "
                                                    "pylibjpeg-openjpeg)")
    return None


def _check_dicom(path: Path) -> Unread | None:
    try:
        dataset = _read_dicom(path, defer_size=1024)
    except _DicomProblem as problem:
        return problem.unread
    return _dicom_problem(path, dataset)


def dicom_group_ids(paths: Sequence[Path], keyword: str) -> list[str | None]:
    """The hashed value of header `keyword` for each DICOM file (None for others or when absent):
    the raw value (a patient id) is never kept."""
    if keyword not in GROUP_TAGS:
        raise DataError(f"--group-by {keyword!r} is not a DICOM grouping tag; use one of {', '.join(GROUP_TAGS)}")

    def one(path: Path) -> str | None:
        if sniff(path) != "dicom":
            return None
        try:
            value = _read_dicom(path, stop_before_pixels=True, specific_tags=[keyword]).get(keyword)
        except _DicomProblem:
            return None
        text = str(value).strip() if value is not None else ""
        return hashlib.sha256(f"{keyword}\0{text}".encode()).hexdigest()[:16] if text else None

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, paths))


def _window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing of `values` to [0, 1]."""
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    width = max(width - 1.0, 1e-6)  # LINEAR: the standard's (center - 0.5, width - 1) form
    return np.clip((values - (center - 0.5)) / width + 0.5, 0.0, 1.0)


def _full_range(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return (values - low) / (high - low)


def _first(value: Any) -> float:
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)


def _dicom_pixels(path: Path, decoding: Decoding) -> tuple[np.ndarray, bool]:
    """(values in [0, 1], grayscale) for a DICOM file, as a viewer shows it."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

    try:
        dataset = _read_dicom(path)
    except _DicomProblem as problem:
        raise DataError(f"image {path}: {problem.unread.detail}; remove or replace it") from None
    problem = _dicom_problem(path, dataset)
    if problem is not None:
        raise DataError(f"image {path}: {problem.reason}: {problem.detail}")
    check_pixel_count(path, int(dataset.get("Columns") or 0), int(dataset.get("Rows") or 0))
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # decoders raise many kinds; each is a damaged or unreadable file
        raise DataError(f"image {path}: the pixel data cannot be decoded ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:120] if str(error) else ''}); remove or replace it") from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        pixels, photometric = apply_color_lut(pixels, dataset), "RGB"
    if pixels.ndim == 3:  # colour: pydicom already converted YBR to RGB
        bits = int(dataset.get("BitsStored") or 8)
        top = 255.0 if pixels.dtype == np.uint8 else float(2 ** bits - 1)
        return np.clip(pixels[..., :3].astype(np.float64) / top, 0.0, 1.0), False
    modality = apply_modality_lut(pixels, dataset)
    values = modality.astype(np.float64)
    if decoding.window is not None:
        scaled = _window(values, *decoding.window)
    elif dataset.get("VOILUTSequence"):
        # A LUT is indexed by integer values (a rescale may have made them float).
        indices = modality if modality.dtype.kind in "iu" else np.rint(modality).astype(np.int64)
        looked_up = apply_voi(indices, dataset, 0).astype(np.float64)
        table = np.asarray(dataset.VOILUTSequence[0].LUTData, dtype=np.float64)
        scaled = np.clip((looked_up - table.min()) / max(table.max() - table.min(), 1.0), 0.0, 1.0)
    elif "WindowCenter" in dataset and "WindowWidth" in dataset and dataset.WindowWidth:
        scaled = _window(values, _first(dataset.WindowCenter), _first(dataset.WindowWidth),
                         str(dataset.get("VOILUTFunction") or "LINEAR"))
    else:
        scaled = _full_range(values)
    if photometric == "MONOCHROME1":  # low values are white in MONOCHROME1
        scaled = 1.0 - scaled
    return scaled, True


# TIFF --------------------------------------------------------------------------------------

def _check_tiff(path: Path) -> Unread | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            pages = len(tiff.pages)
    except Exception as error:  # tifffile raises several kinds on damaged files
        return Unread(path, DAMAGED_TIFF, f"tifffile cannot read it ({type(error).__name__})")
    if pages > 1:
        return Unread(path, MULTI_PAGE_TIFF, f"{pages} pages; medsweep reads one image per file, so save single "
                                             "pages")
    return None


def _tiff_pixels(path: Path, decoding: Decoding) -> tuple[np.ndarray, bool]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            check_pixel_count(path, int(page.imagewidth), int(page.imagelength))
            pixels = page.asarray()
            min_is_white = page.photometric == tifffile.PHOTOMETRIC.MINISWHITE
    except DataError:
        raise
    except Exception as error:  # damaged or exotic compression
        raise DataError(f"image {path} cannot be decoded by tifffile ({type(error).__name__}); remove or replace "
                        "it") from None
    pixels = np.squeeze(pixels)
    if pixels.ndim == 3 and pixels.shape[0] in (3, 4) and pixels.shape[-1] not in (3, 4):
        pixels = np.moveaxis(pixels, 0, -1)  # planar RGB
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        colour = pixels[..., :3]
        if colour.dtype == np.uint8:
            return colour.astype(np.float64) / 255.0, False
        return _full_range(colour.astype(np.float64)), False
    if pixels.ndim != 2:
        raise DataError(f"image {path} has shape {pixels.shape}; medsweep reads 2-D grayscale or RGB TIFF")
    scaled = _gray(pixels, decoding)
    return (1.0 - scaled if min_is_white else scaled), True


def _gray(pixels: np.ndarray, decoding: Decoding) -> np.ndarray:
    """One grayscale plane to [0, 1]: the window, else 8-bit as stored, else its own range."""
    values = pixels.astype(np.float64)
    if decoding.window is not None:
        return _window(values, *decoding.window)
    if pixels.dtype in (np.uint8, np.bool_):
        return values / (1.0 if pixels.dtype == np.bool_ else 255.0)
    return _full_range(values)


# Size limit --------------------------------------------------------------------------------

PIXELS_ENV = "MEDSWEEP_MAX_IMAGE_PIXELS"
# 8192 x 8192: above any mammogram or radiograph (about 4000 x 5000); a 16-bit image that size
# takes 128 MB decoded, and a worker decodes eight at once.
MAX_IMAGE_PIXELS = 8192 * 8192


def max_image_pixels() -> int:
    """The largest width x height medsweep decodes: $MEDSWEEP_MAX_IMAGE_PIXELS, else 8192 x 8192."""
    configured = os.environ.get(PIXELS_ENV, "").strip()
    if not configured:
        return MAX_IMAGE_PIXELS
    try:
        return max(1, int(float(configured)))
    except ValueError:
        raise DataError(f"${PIXELS_ENV} is {configured!r}, not a number; set a pixel count such as 67108864") from None


def check_pixel_count(path: Path, width: int, height: int) -> None:
    """Refuse an image above the limit from its header, before any pixel is decoded."""
    limit = max_image_pixels()
    if width * height > limit:
        raise DataError(
            f"image {path} is {width} x {height} = {width * height / 1e6:.0f} megapixels, above the "
            f"limit of {limit / 1e6:.0f} megapixels; downscale it, remove it, or raise ${PIXELS_ENV}"
        )


# Pillow formats ----------------------------------------------------------------------------

def _pillow_image(path: Path, size: int | None, decoding: Decoding) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    # Pillow's own guard warns at 89 Mpx and raises a traceback at 179 Mpx; `check_pixel_count`
    # reads the size from the header and refuses before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            check_pixel_count(path, *image.size)
            image.load()
            high_bit = image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
            if high_bit or (decoding.window is not None and image.mode in ("L", "LA", "P", "1")):
                plane = np.asarray(image.convert("L") if image.mode in ("LA", "P", "1") else image)
                return _to_uint8(_gray(plane, decoding), True, size)
            # 8-bit grayscale and colour: unchanged from medsweep's first decoder (cached features stay valid).
            image = image.convert("RGB")
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(f"image {path} cannot be decoded ({error}); remove or replace the file") from None


def _to_uint8(values: np.ndarray, grayscale: bool, size: int | None) -> np.ndarray:
    """Resize values in [0, 1] in floating point (None: keep their size), then the one rounding to 0-255."""
    from PIL import Image

    def resized(plane: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32)

    planes = [values] if grayscale else [values[..., channel] for channel in range(3)]
    out = np.stack([resized(plane) for plane in planes], axis=-1)
    out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(out, 3, axis=-1) if grayscale else out


_READERS: dict[str, Callable[[Path, Decoding], tuple[np.ndarray, bool]]] = {
    "dicom": _dicom_pixels, "tiff": _tiff_pixels,
}


def read_image(path: Path, size: int | None, decoding: Decoding | None = None) -> np.ndarray:
    """Decode any supported file to a size x size x 3 uint8 array by the rule of this module
    (size None: height x width x 3 at the image's own size)."""
    decoding = decoding or Decoding()
    kind = sniff(path)
    if kind is None:
        problem = check_file(path)
        raise DataError(f"image {path} cannot be read: {problem.detail if problem else 'unknown content'}; "
                        "remove or replace it")
    reader = _READERS.get(kind)
    if reader is None:
        return _pillow_image(path, size, decoding)
    if kind == "tiff":
        problem = _check_tiff(path)
        if problem is not None:
            raise DataError(f"image {path}: {problem.reason}: {problem.detail}")
    values, grayscale = reader(path, decoding)
    return _to_uint8(values, grayscale, size)


def decode_workers() -> int:
    return min(8, (os.cpu_count() or 2) * 2)


def decode_image(path: Path, size: int, decoding: Decoding | None = None) -> np.ndarray:
    """Decode PNG, JPEG, BMP, WebP, TIFF or DICOM to a size x size x 3 uint8 array (`_formats`'s rule)."""
    return read_image(Path(path), size, decoding)


def decode_full_size(path: Path, decoding: Decoding | None = None) -> np.ndarray:
    """Decode any supported file at its own size (height x width x 3 uint8), by the same rule as
    `decode_image`: what an overlay is drawn on."""
    return read_image(Path(path), None, decoding)


def decode_images(paths: Sequence[Path], size: int, decoding: Decoding | None = None) -> np.ndarray:
    """Decode many files in threads (Pillow and numpy release the GIL while decoding)."""
    if not paths:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        return np.stack(list(pool.map(lambda p: read_image(p, size, decoding), paths)))

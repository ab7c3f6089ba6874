"""The data a trial learns from: image formats (PNG, JPEG, BMP, WebP, TIFF, DICOM; one decoding
rule), labelled file lists from class folders or CSV manifests, fingerprints, leakage-safe
groups and splits, grey-level checks, and decoded arrays: in memory, memory-mapped on disk for
large sets, and the key-addressed array cache that feature caches build on. No Keras import."""

from ._array_cache import (CACHE_ENV, CUT_BUDGET_ENV, ArrayCache, cut_cache_budget, default_cache_dir,
                           file_sha256)
from ._dataset import (DataSpec, ImageDataset, TrialData, file_digests, fingerprint_files, scan_image_folder,
                       stratified_split)
from ._files import LabeledFiles
from ._formats import (GROUP_TAGS, HIDDEN, NOT_AN_IMAGE, Decoding, Unread, decode_full_size, decode_image,
                       decode_images, dicom_group_ids, list_images, model_decoding, summarize_unread)
from ._grey_levels import IntensityReport
from ._manifest import read_manifest
from ._splits import GroupReport, SplitPlan, assign_groups, grouped_folds, plan_splits

__all__ = [
    "ArrayCache",
    "CACHE_ENV",
    "CUT_BUDGET_ENV",
    "DataSpec",
    "Decoding",
    "GROUP_TAGS",
    "GroupReport",
    "HIDDEN",
    "ImageDataset",
    "IntensityReport",
    "LabeledFiles",
    "NOT_AN_IMAGE",
    "SplitPlan",
    "TrialData",
    "Unread",
    "assign_groups",
    "cut_cache_budget",
    "decode_full_size",
    "decode_image",
    "decode_images",
    "default_cache_dir",
    "dicom_group_ids",
    "file_digests",
    "file_sha256",
    "grouped_folds",
    "fingerprint_files",
    "list_images",
    "model_decoding",
    "plan_splits",
    "read_manifest",
    "scan_image_folder",
    "stratified_split",
    "summarize_unread",
]

"""Calibration samples and validation images for quantized exports.

``load_calibration(dir, input_size, count, seed)`` cuts ``count`` LR patches of the
export input size from the images under ``dir`` (any size, RGB / grey / RGBA / 16-bit,
subfolders); ``validation_set`` builds (LR, HR) pairs from a benchmark folder or from
the calibration images held out of calibration. Numpy only (no torch).
"""
from edgesr.calibration.samples import (
    DEFAULT_COUNT,
    DEFAULT_SEED,
    CalibrationSet,
    load_calibration,
    split_images,
)
from edgesr.calibration.validation import ValidationPair, ValidationSet, validation_set

__all__ = ["DEFAULT_COUNT", "DEFAULT_SEED", "CalibrationSet", "load_calibration", "split_images",
           "ValidationPair", "ValidationSet", "validation_set"]

"""Loaders of the data sets in their distributed layouts, and patient-level splits."""

from __future__ import annotations

from .acdc import (
    GROUPS,
    LABELS,
    AcdcFrame,
    acdc_frames,
    acdc_slices,
    find_acdc_frames,
    load_acdc_slices,
    read_info_cfg,
)
from .brats import (
    BRATS_LABELS,
    BRATS_MODALITIES,
    BRATS_REGIONS,
    SEGMENTATION_ALIASES,
    BratsCase,
    brats_datalist,
    find_brats_cases,
    write_brats_datalist,
)
from .lgg import (
    CHANNELS,
    DATA_CSV_COLUMNS,
    MASK_VALUES,
    LggPatient,
    LggSlice,
    find_lgg_patients,
    lgg_patients,
    lgg_slices,
    lgg_volumes,
    load_lgg_volumes,
    patient_id,
    read_data_csv,
    scale_percentiles,
)
from .splits import kfold_split, train_val_test_split

__all__ = [
    "GROUPS",
    "LABELS",
    "AcdcFrame",
    "acdc_frames",
    "acdc_slices",
    "find_acdc_frames",
    "load_acdc_slices",
    "read_info_cfg",
    "BRATS_LABELS",
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "SEGMENTATION_ALIASES",
    "BratsCase",
    "brats_datalist",
    "find_brats_cases",
    "write_brats_datalist",
    "CHANNELS",
    "DATA_CSV_COLUMNS",
    "MASK_VALUES",
    "LggPatient",
    "LggSlice",
    "find_lgg_patients",
    "lgg_patients",
    "lgg_slices",
    "lgg_volumes",
    "load_lgg_volumes",
    "patient_id",
    "read_data_csv",
    "scale_percentiles",
    "kfold_split",
    "train_val_test_split",
]

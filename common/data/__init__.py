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
from .lgg import (
    CHANNELS,
    DATA_CSV_COLUMNS,
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
from .splits import kfold_split

"""Networks (``nets``), their blocks (``blocks``), trained-weight loading (``weights``) and inference copies
(``utils``)."""

from __future__ import annotations

from .utils import optimize_for_inference
from .weights import (
    load_weights,
    missing_weights_error,
    model_info_path,
    read_model_info,
    unwrap_parallel,
    warn_if_settings_differ,
    weights_mismatch,
    write_model_info,
)

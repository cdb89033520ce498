#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned stack and the `common` package (editable). Idempotent:
# a stamp named after the hash of the install inputs skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
stamp=.venv/.installed-$(cat requirements.txt requirements-monailabel.txt scripts/install.sh setup.cfg pyproject.toml | sha1sum | cut -c1-12)
[ -f "$stamp" ] && exit 0
log=.venv/install.log
pip() { .venv/bin/python -m pip "$@" >>"$log" 2>&1 || { tail -40 "$log"; echo "install failed: see $log" >&2; exit 1; }; }
echo "installing the pinned stack into .venv (a few minutes on a fresh machine; log: $log)"
pip install --upgrade pip
pip install -r requirements.txt
# GeodisTK 0.1.7 is a source package: its setup.py imports numpy and its C++ uses NPY_IN_ARRAY (gone in NumPy 2).
CPPFLAGS="-DNPY_IN_ARRAY=NPY_ARRAY_IN_ARRAY" pip install --no-build-isolation GeodisTK==0.1.7
# FastGeodis 1.0.5 (CPU OpenMP + CUDA geodesic maps) builds from source and its setup.py needs pkg_resources.
pip install "setuptools<81"
pip install --no-build-isolation FastGeodis==1.0.5
pip install --no-build-isolation --no-deps -e .
# MONAI Label 0.8.5 (apps/monailabel) in the same .venv, about 30 s: its requirements except sam2 and numpymaxflow,
# then monailabel and pydicom-seg without their pins (see requirements-monailabel.txt: numpy<2, jsonschema<4).
pip install -r requirements-monailabel.txt
pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1
.venv/bin/python -c "import torch, torchvision, monai, GeodisTK, FastGeodis, common, monailabel.app"  # fail here, not in the first test
rm -f .venv/.installed-*
touch "$stamp"

#!/usr/bin/env bash
# The main job on small embedded data: set up .venv, write the synthetic ACDC, LGG, BraTS, CSI 2014 spine and ATLAS
# copies (every bundle's default data), train the ACDC U-Net, run the IGS search and LOUPE under both forward models (phase-aware and
# magnitude-only) and compare the learned patterns with the baselines (configs/demo.json: x8 and x16, a small network,
# short schedules). 32-57 minutes on 2 CPU cores shared with other jobs (measured; see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
C=bundles/igs_acdc/configs
if [ ! -d data/acdc/training ]; then
  $PY -m common.synthetic.acdc --out data/acdc --n_training 30 --n_testing 10 --seed 0
fi
# the other bundles' default data (their `run training` works on it out of the box)
[ -d data/lgg/kaggle_3m ] || $PY -m common.synthetic.lgg --out data/lgg
[ -d data/brats/MICCAI_BraTS2020_TrainingData ] || $PY -m common.synthetic.brats --out data/brats --shape 96,96,64 --n_cases 24
[ -d data/csi2014/train ] || $PY -m common.synthetic.spine --out data/csi2014
# ATLAS R2.0 layout on nilearn's MNI152 template at the real 1 mm grid (resunet_zoom_atlas: 10 subjects in 5 folds,
# 2 Testing subjects; about 20-40 s per subject on 2 CPU cores)
[ -d data/atlas/ATLAS_2 ] || $PY -m common.synthetic.atlas --out data/atlas --n_subjects 10 --n_testing 2
# Training resumes from models/checkpoint_last.pt, the searches from models/igs_<model>_state.json and LOUPE skips
# the patterns it has written, when they exist and were made with the same settings: delete bundles/igs_acdc/models
# to start afresh.
$PY -m monai.bundle run training --config_file "['$C/train.json','$C/demo.json']"
for fm in phase magnitude; do
  $PY -m monai.bundle run --config_file "['$C/train.json','$C/igs_search.json','$C/demo.json']" --igs_forward_model $fm
  $PY -m monai.bundle run --config_file "['$C/train.json','$C/loupe.json','$C/demo.json']" --loupe_forward_model $fm
done
$PY -m monai.bundle run --config_file "['$C/train.json','$C/evaluate.json','$C/demo.json']"
cat <<MSG

Done. Outputs:
  learned patterns   bundles/igs_acdc/models/{igs,loupe}_{phase,magnitude}_x{16,8}.npy (+ .json: lines, order,
                     fingerprint of the network, data and settings)
  search figures     bundles/igs_acdc/models/igs_{phase,magnitude}_search.png
  comparison table   bundles/igs_acdc/eval/pattern_comparison.md (and .csv)
  Dice plot          bundles/igs_acdc/eval/dice_vs_acceleration.png
  network settings   bundles/igs_acdc/models/model.json (what models/model.pt was trained with)
MSG
# the Dice tables of both forward models
awk '/^## Forward model/ {print; print ""} /^\*\*Dice/ {on=1} on {print} on && /^$/ {on=0}' bundles/igs_acdc/eval/pattern_comparison.md
cat <<MSG

Next: the demo's network is smaller than the default one (configs/demo.json: 128x128 slices, 8 base features),
so merge demo.json on every command that loads models/model.pt:
  # segment data/acdc/testing acquired with the learned x8 pattern (the magnitude model's: inference simulates
  # the acquisition from magnitude images) -> bundles/igs_acdc/eval/inference/*_seg.nii.gz
  $PY -m monai.bundle run --config_file "['$C/inference.json','$C/demo.json']" --pattern learned --acceleration 8
  # export to TorchScript
  $PY -m monai.bundle ckpt_export network_def --filepath bundles/igs_acdc/models/model.ts \\
      --ckpt_file bundles/igs_acdc/models/model.pt --meta_file $C/metadata.json \\
      --config_file "['$C/inference.json','$C/demo.json']"
MSG

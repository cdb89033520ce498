#!/usr/bin/env bash
# The main job on small embedded data: set up .venv, write the synthetic ACDC, LGG, BraTS, CSI 2014 spine and ATLAS
# copies (every bundle's default data), train the ACDC U-Net, learn k-space patterns with LOUPE and the IGS search
# under the bundle's default (phase-aware) forward model and compare them with the baselines, frozen and fine-tuned,
# with paired per-volume intervals (configs/demo.json: x8 and x16, a small network, short schedules). Time on 2 CPU
# cores after the install: see the README. The model card's full table: scripts/igs_acdc_card.sh.
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
# Training resumes from models/checkpoint_last.pt, LOUPE from its per-epoch state, the search from
# models/igs_phase_state.json, when they exist and were made with the same settings: delete bundles/igs_acdc/models
# to start afresh. Every step uses the bundle's default forward model (phase-aware, configs/train.json).
$PY -m monai.bundle run training --config_file "['$C/train.json','$C/demo.json']"
# LOUPE first: its pattern is one of the patterns the search must not lose to on its own loss
$PY -m monai.bundle run --config_file "['$C/train.json','$C/loupe.json','$C/demo.json']"
$PY -m monai.bundle run --config_file "['$C/train.json','$C/igs_search.json','$C/demo.json']"
$PY -m monai.bundle run --config_file "['$C/train.json','$C/evaluate.json','$C/demo.json']"
cat <<MSG

Done. Outputs:
  learned patterns   bundles/igs_acdc/models/{igs,loupe}_phase_x{16,8}.npy (+ .json: lines, order, search loss,
                     the guards' losses, fingerprint of the network, data and settings)
  figures            bundles/igs_acdc/models/igs_phase_search.png, loupe_phase_loss.png
  comparison table   bundles/igs_acdc/eval/pattern_comparison.md (and .csv; paired per-volume intervals in
                     pattern_comparison_intervals.csv)
  Dice plot          bundles/igs_acdc/eval/dice_vs_acceleration.png
  network settings   bundles/igs_acdc/models/model.json (what models/model.pt was trained with)
MSG
# the Dice and search-loss tables and the generated findings (synthetic data, one network: see the card for several)
awk '/^## Forward model/ {print; print ""}
     /^\*\*(Dice|Search loss|Findings)/ {on=1; body=0}
     on {print; if (/^$/ && body) on=0; if (!/^$/ && !/^\*\*/) body=1}' bundles/igs_acdc/eval/pattern_comparison.md
cat <<MSG

Next: the demo's network is smaller than the default one (configs/demo.json: 128x128 slices, 8 base features),
so merge demo.json on every command that loads models/model.pt:
  # segment data/acdc/testing acquired with the learned x8 pattern (the phase model's: inference gives each slice
  # its seeded phase map, as the search did; --forward_model magnitude reads the magnitude pattern)
  # -> bundles/igs_acdc/eval/inference/*_seg.nii.gz
  $PY -m monai.bundle run --config_file "['$C/inference.json','$C/demo.json']" --pattern learned --acceleration 8
  # export to TorchScript
  $PY -m monai.bundle ckpt_export network_def --filepath bundles/igs_acdc/models/model.ts \\
      --ckpt_file bundles/igs_acdc/models/model.pt --meta_file $C/metadata.json \\
      --config_file "['$C/inference.json','$C/demo.json']"
The model card's full table (three networks, both forward models, and the shipped defaults; resumable, several
hours on 2 CPU cores, see bundles/igs_acdc/docs/README.md):
  bash scripts/igs_acdc_card.sh
MSG

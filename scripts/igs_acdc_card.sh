#!/usr/bin/env bash
# The igs_acdc model card's results, reproduced: on the synthetic ACDC copy of scripts/demo.sh, with the demo's network
# (configs/demo.json: 128x128 slices, 8 base features, 10 epochs) trained once per network seed.
#   1. per network seed (NETWORK_SEEDS, default "0 1 2"): train, LOUPE and the bundle's IGS search under the bundle's
#      forward model (phase-aware), and the pattern comparison (x8 / x16, frozen and fine-tuned; the demo's schedules:
#      LOUPE 3 epochs, 1 fine-tuning epoch) -> bundles/igs_acdc/eval/seed<s>/; then the summary over the networks (mean
#      +- sd over networks, paired per-volume intervals against the best baseline) -> bundles/igs_acdc/eval/network_seeds.md;
#      and the same under the magnitude-only model on the first network -> bundles/igs_acdc/eval/seed<s>_magnitude/
#   2. the shipped defaults side by side on network seed 0 (DEFAULTS=0 skips it): LOUPE at 100 epochs, the search
#      with its default lookahead, the default fine-tuning length, phase-aware model, x8 / x16
#      -> bundles/igs_acdc/eval/defaults/
# Every step resumes (training from checkpoint_last.pt, the searches from their state, LOUPE from its per-epoch
# state, a comparison from its finished rows in pattern_comparison_state.pt) or is skipped when its output exists: stop it at any time and run the same command again. Delete
# bundles/igs_acdc/models/seed<s> and bundles/igs_acdc/eval/seed<s> to start a seed afresh. Times on 2 CPU cores are
# in the card ("Results").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
C=bundles/igs_acdc/configs
B=bundles/igs_acdc
[ -d data/acdc/training ] || $PY -m common.synthetic.acdc --out data/acdc --n_training 30 --n_testing 10 --seed 0
run() { $PY -m monai.bundle run "$@"; }
runs=()
for s in ${NETWORK_SEEDS:-0 1 2}; do  # the bundle's forward model (phase-aware) for every network
  args=(--seed "$s" --ckpt_dir "$B/models/seed$s" --output_dir "$B/eval/seed$s")
  run training --config_file "['$C/train.json','$C/demo.json']" "${args[@]}"
  # LOUPE first: its pattern is one of the search's guards
  run --config_file "['$C/train.json','$C/loupe.json','$C/demo.json']" "${args[@]}"
  run --config_file "['$C/train.json','$C/igs_search.json','$C/demo.json']" "${args[@]}"
  [ -f "$B/eval/seed$s/pattern_comparison.csv" ] ||
    run --config_file "['$C/train.json','$C/evaluate.json','$C/demo.json']" "${args[@]}"
  runs+=("$B/eval/seed$s")
done
$PY -m common.apps.igs.seeds --runs "${runs[@]}" --out "$B/eval/network_seeds"
# the paper's magnitude-only forward model on the first network
s=${NETWORK_SEEDS:-0}; s=${s%% *}
args=(--seed "$s" --ckpt_dir "$B/models/seed$s" --output_dir "$B/eval/seed${s}_magnitude")
run --config_file "['$C/train.json','$C/loupe.json','$C/demo.json']" "${args[@]}" --loupe_forward_model magnitude
run --config_file "['$C/train.json','$C/igs_search.json','$C/demo.json']" "${args[@]}" --igs_forward_model magnitude
[ -f "$B/eval/seed${s}_magnitude/pattern_comparison.csv" ] ||
  run --config_file "['$C/train.json','$C/evaluate.json','$C/demo.json']" "${args[@]}" --forward_models "['magnitude']"
if [ "${DEFAULTS:-1}" = 1 ]; then
  # the defaults of loupe.json, igs_search.json and evaluate.json on the seed-0 network (its own folder, so that the
  # demo-schedule patterns of step 1 stay as they are); only the network's size and the accelerations are the demo's
  d=(--seed 0 --ckpt_dir "$B/models/defaults" --output_dir "$B/eval/defaults")
  mkdir -p "$B/models/defaults"
  cp -n "$B/models/seed0/model.pt" "$B/models/seed0/model.json" "$B/models/defaults/"
  keep=(--image_size 128 --unet_features "[8,16,32,64,128,8]")
  run --config_file "['$C/train.json','$C/loupe.json']" "${d[@]}" "${keep[@]}" --loupe_accelerations "[16,8]"
  run --config_file "['$C/train.json','$C/igs_search.json']" "${d[@]}" "${keep[@]}" --igs_accelerations "[16,8]"
  [ -f "$B/eval/defaults/pattern_comparison.csv" ] ||
    run --config_file "['$C/train.json','$C/evaluate.json']" "${d[@]}" "${keep[@]}" \
      --comparison_accelerations "[8,16]"
fi
echo "Done: $B/eval/network_seeds.md (network seeds), $B/eval/defaults/pattern_comparison.md (shipped defaults)"

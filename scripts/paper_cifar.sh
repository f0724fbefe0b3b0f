#!/usr/bin/env bash
# The experiment of docs/results.md: the paper's protocol on the shared CIFAR-10 test folder with
# the shipped VGG19, every attack, the defense under both DTD composites, and two sigma sweeps
# (L-BFGS, the paper's Figure 4; PGD-Linf); then the tables and figures.
#
#   bash scripts/paper_cifar.sh [OUT_DIR]          # default OUT_DIR: runs/paper_cifar
#
# Each run writes to a fixed directory, so the same command, started again after an interruption,
# resumes every unfinished run from its last finished batch and skips the finished ones.
# Extra Hydra overrides for every run can be passed in HBJAX_OVERRIDES, e.g.
#   HBJAX_OVERRIDES="num_examples=50" bash scripts/paper_cifar.sh /tmp/quick
# and for the L-BFGS sigma sweep alone in LBFGS_SWEEP_OVERRIDES (after HBJAX_OVERRIDES).
set -euo pipefail

out="${1:-runs/paper_cifar}"
read -r -a extra <<< "${HBJAX_OVERRIDES:-}"
read -r -a lbfgs_extra <<< "${LBFGS_SWEEP_OVERRIDES:-}"
attacks=(pgd_linf adaptive_heatmap bpda_eot boundary lbfgs cw_l2 cw_l2_targeted)

run() {  # run NAME ARGS...: one timed hbjax-evaluate
  local name="$1"; shift
  echo "== ${name}"
  /usr/bin/time -f "${name}: %e s wall" hbjax-evaluate "$@"
}

# experiment=paper_cifar explains with deep_taylor (iNNvestigate's DeepTaylor, the paper's tool);
# one PGD run with dtd measures what the composite changes
run "pgd_linf lrp=dtd" experiment=paper_cifar attack=pgd_linf lrp=dtd \
  hydra.run.dir="${out}/composites/dtd" "${extra[@]}"
for attack in "${attacks[@]}"; do
  run "attack ${attack}" experiment=paper_cifar attack="${attack}" \
    hydra.run.dir="${out}/attacks/${attack}" "${extra[@]}"
done

run "sigma sweep (PGD-Linf)" -m experiment=paper_cifar attack=pgd_linf \
  defense.sigma=0.5,0.8,1.0,1.2,1.5,2.0 hydra.sweep.dir="${out}/sigma" "${extra[@]}"
run "sigma sweep (L-BFGS)" -m experiment=paper_cifar attack=lbfgs \
  defense.sigma=0.5,1.0,1.5,2.0 hydra.sweep.dir="${out}/sigma_lbfgs" "${extra[@]}" "${lbfgs_extra[@]}"

hbjax-report "${out}/attacks"
hbjax-report "${out}/sigma"
hbjax-report "${out}/sigma_lbfgs"

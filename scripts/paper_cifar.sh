#!/usr/bin/env bash
# The experiment of docs/results.md: the paper's protocol on the shared CIFAR-10 test folder with
# the shipped VGG19, every attack, and a sigma sweep; then the tables and figures.
#
#   bash scripts/paper_cifar.sh [OUT_DIR]          # default OUT_DIR: runs/paper_cifar
#
# Each run writes to a fixed directory, so the same command, started again after an interruption,
# resumes every unfinished run from its last finished batch and skips the finished ones.
# Extra Hydra overrides for every run can be passed in HBJAX_OVERRIDES, e.g.
#   HBJAX_OVERRIDES="num_examples=50" bash scripts/paper_cifar.sh /tmp/quick
set -euo pipefail

out="${1:-runs/paper_cifar}"
read -r -a extra <<< "${HBJAX_OVERRIDES:-}"
attacks=(pgd_linf cw_l2 cw_l2_targeted lbfgs boundary adaptive_heatmap bpda_eot)

for attack in "${attacks[@]}"; do
  echo "== attack ${attack}"
  /usr/bin/time -f "${attack}: %e s wall" \
    hbjax-evaluate experiment=paper_cifar attack="${attack}" hydra.run.dir="${out}/attacks/${attack}" "${extra[@]}"
done

echo "== sigma sweep (PGD-Linf)"
/usr/bin/time -f "sigma sweep: %e s wall" \
  hbjax-evaluate -m experiment=paper_cifar attack=pgd_linf defense.sigma=0.5,0.8,1.0,1.2,1.5,2.0 \
  hydra.sweep.dir="${out}/sigma" "${extra[@]}"

hbjax-report "${out}/attacks"
hbjax-report "${out}/sigma"

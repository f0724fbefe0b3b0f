# Sourced by scripts/paper_cifar.sh and scripts/paper_imagenet.sh: timed hbjax-evaluate runs,
# one after another or HBJAX_JOBS at a time (independent runs sharing one machine, e.g. a GPU),
# a failed run reported at the end without stopping the others.
#
#   run NAME ARGS...       one hbjax-evaluate (ARGS: its overrides), logged to $RUN_LOGS/NAME.log
#   in_turn FUNCTION       a function of run_now calls (run's arguments) as one job: its runs one
#                          after another, in turn with the others (a run that reads another's output)
#   finish_runs            wait for every run; exit status 1 if any failed

RUN_LOGS="${RUN_LOGS:-${out:?out must be set before sourcing runs.sh}/logs}"
_jobs_max="${HBJAX_JOBS:-1}"
# Several runs on one GPU: unless told not to, each JAX process reserves 75% of the GPU's memory at
# start, which leaves the runs after the first without room; off, each run takes what it uses. On an
# NVIDIA GPU, CUDA MPS (nvidia-cuda-mps-control -d, before this script) lets the runs' kernels
# execute side by side.
if (( _jobs_max > 1 )); then
  export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
fi
_failed_file="$(mktemp)"
mkdir -p "${RUN_LOGS}"

_run_one() {
  local name="$1"; shift
  local log="${RUN_LOGS}/${name// /_}.log" start=${SECONDS}
  echo "== ${name}: started"
  if hbjax-evaluate "$@" progress=false >"${log}" 2>&1; then
    echo "== ${name}: $((SECONDS - start)) s wall"
  else
    echo "== ${name}: FAILED after $((SECONDS - start)) s (see ${log})"
    echo "${name}" >>"${_failed_file}"
    return 1
  fi
}

run_now() { _run_one "$@"; }

in_turn() {
  if (( _jobs_max > 1 )); then
    while (( $(jobs -rp | wc -l) >= _jobs_max )); do wait -n || true; done
    "$@" &
  else
    "$@"
  fi
}

run() { in_turn _run_one "$@"; }

finish_runs() {
  wait
  if [[ -s "${_failed_file}" ]]; then
    echo "failed runs (rerun the same command to resume them):"; sed 's/^/  /' "${_failed_file}"
    rm -f "${_failed_file}"; return 1
  fi
  rm -f "${_failed_file}"
}

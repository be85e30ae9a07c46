#!/usr/bin/env bash
# Runs jpg-jax on a Cloud TPU VM slice: every worker (host) runs the same `python -m jpg_jax.main`, JAX's
# distributed runtime finds the other hosts (--distributed=true), each host reads its share of every batch
# and all of them write the orbax checkpoints to one gs:// workdir.
#
#   ./launch_tpu.sh [options] [-- extra flags for jpg_jax.main]
#
# Options (environment variables in brackets are the defaults):
#   --name NAME               TPU VM name                                   [TPU_NAME, jpg-jax]
#   --zone ZONE               zone                                          [TPU_ZONE, us-central2-b]
#   --accelerator-type TYPE   e.g. v4-32, v5litepod-64                      [TPU_ACCELERATOR_TYPE, v4-32]
#   --runtime-version V       TPU VM software version                       [TPU_RUNTIME_VERSION, tpu-ubuntu2204-base]
#   --project PROJECT         gcloud project (gcloud's default if empty)     [TPU_PROJECT]
#   --spot                    create a Spot slice (preemptible: resume by running this again)
#   --config SPEC             config file and variants                      [JPG_CONFIG, configs/jpg.py]
#   --workdir gs://...        checkpoints, logs, results (shared by all hosts) [JPG_WORKDIR]
#   --manual-dir gs://...     IU X-Ray archives, copied to every worker's data/iu_xray before the run
#   --skip-create / --skip-copy / --skip-install / --skip-run   leave out a step (reuse what is there)
#   --delete                  delete the slice after the run (alone with --skip-run: just delete it)
#   --dry-run                 print every command instead of running it
#
# Steps: create the slice unless `describe` finds it; pack this working tree (no .git, .venv or built
# data) and unpack it on every worker; install jax[tpu] and the package there; run main on all workers
# with the logs streamed here (only process 0 logs at INFO; each worker also keeps ~/jpg-jax/run.log);
# delete the slice on request. Rerunning after a preemption resumes from the workdir's latest checkpoint.
set -euo pipefail

NAME="${TPU_NAME:-jpg-jax}"
ZONE="${TPU_ZONE:-us-central2-b}"
TYPE="${TPU_ACCELERATOR_TYPE:-v4-32}"
VERSION="${TPU_RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${TPU_PROJECT:-}"
CONFIG="${JPG_CONFIG:-configs/jpg.py}"
WORKDIR="${JPG_WORKDIR:-}"
MANUAL_DIR=""
SPOT=0 DRY_RUN=0 DELETE=0 DO_CREATE=1 DO_COPY=1 DO_INSTALL=1 DO_RUN=1
EXTRA=()

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator-type) TYPE="$2"; shift 2 ;;
    --runtime-version) VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --manual-dir) MANUAL_DIR="$2"; shift 2 ;;
    --skip-create) DO_CREATE=0; shift ;;
    --skip-copy) DO_COPY=0; shift ;;
    --skip-install) DO_INSTALL=0; shift ;;
    --skip-run) DO_RUN=0; shift ;;
    --delete) DELETE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "launch_tpu.sh: unknown option $1" >&2; usage 2 ;;
  esac
done

if [[ $DO_RUN == 1 && "$WORKDIR" != gs://* ]]; then
  echo "launch_tpu.sh: --workdir must be a gs:// path that every host of the slice can write" >&2
  exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARBALL="${TMPDIR:-/tmp}/jpg-jax-${NAME}.tgz"
GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && WHERE+=(--project="$PROJECT")

# Prints the command (shell-quoted), then runs it unless --dry-run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ $DRY_RUN == 1 ]] || "$@"
}

# The same shell command on every worker of the slice, output streamed here.
on_all_workers() {
  run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$1"
}

q() { printf '%q' "$1"; }

if [[ $DO_CREATE == 1 ]]; then
  create=("${GCLOUD[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$TYPE" --version="$VERSION")
  [[ $SPOT == 1 ]] && create+=(--spot)
  if [[ $DRY_RUN == 1 ]]; then
    run "${GCLOUD[@]}" describe "$NAME" "${WHERE[@]}"
    echo "# if describe fails (no such slice):"
    run "${create[@]}"
  elif "${GCLOUD[@]}" describe "$NAME" "${WHERE[@]}" >/dev/null 2>&1; then
    echo "# reusing TPU VM $NAME in $ZONE"
  else
    run "${create[@]}"
  fi
fi

if [[ $DO_COPY == 1 ]]; then
  run tar czf "$TARBALL" --exclude=.git --exclude=.venv --exclude=data/tfds --exclude='__pycache__' \
    -C "$REPO" .
  run "${GCLOUD[@]}" scp "$TARBALL" "$NAME:jpg-jax.tgz" "${WHERE[@]}" --worker=all
  on_all_workers "rm -rf ~/jpg-jax && mkdir -p ~/jpg-jax && tar xzf ~/jpg-jax.tgz -C ~/jpg-jax"
  if [[ -n "$MANUAL_DIR" ]]; then
    on_all_workers "mkdir -p ~/jpg-jax/data/iu_xray && gcloud storage cp -r $(q "${MANUAL_DIR%/}/*") ~/jpg-jax/data/iu_xray/"
  fi
fi

if [[ $DO_INSTALL == 1 ]]; then
  on_all_workers "cd ~/jpg-jax && python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip && pip install -q 'jax[tpu]' -e '.[tpu]'"
fi

if [[ $DO_RUN == 1 ]]; then
  main="python -m jpg_jax.main --config=$(q "$CONFIG") --workdir=$(q "$WORKDIR") --distributed=true"
  for flag in "${EXTRA[@]+"${EXTRA[@]}"}"; do main+=" $(q "$flag")"; done
  on_all_workers "set -o pipefail; cd ~/jpg-jax && . .venv/bin/activate && $main 2>&1 | tee -a ~/jpg-jax/run.log"
fi

if [[ $DELETE == 1 ]]; then
  run "${GCLOUD[@]}" delete "$NAME" "${WHERE[@]}" --quiet
fi

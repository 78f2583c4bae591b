#!/usr/bin/env bash
# Cloud TPU VM slices for scalelab: create, set up, run on every worker, read logs, delete.
#
#   launch/tpu_vm.sh [--dry-run] ACTION --name NAME --zone ZONE [options] [-- COMMAND ...]
#
# ACTION   create | setup | run | logs | delete
# options  --accelerator TYPE   e.g. v5p-32 (create; default v4-8)
#          --version VERSION    TPU software version (create; default tpu-ubuntu2204-base)
#          --project PROJECT    passed to every gcloud command
#          --spot               spot capacity (create)
#          --queued             create through a queued resource (waits for capacity)
#          --repo URL           repository to clone on each worker (setup; default: this checkout's origin)
#          --branch BRANCH      branch to check out (setup; default main)
#          --dir DIR            checkout directory on the workers (default scalelab)
#
# `run` starts COMMAND (e.g. python -m scalelab.run ...) on all workers in the
# background, each logging to ~/scalelab-logs/<name>-<worker hostname>.log; a gs://
# --workdir is written by orbax directly. JAX finds the slice's other hosts itself.
# --dry-run prints each gcloud command instead of running it.
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(dirname "$0")/common.sh"

dry_run=0
action=''
name=''
zone=''
accelerator='v4-8'
version='tpu-ubuntu2204-base'
project=''
spot=0
queued=0
repo=''
branch='main'
dir='scalelab'
command=()

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --name|--zone|--accelerator|--version|--project|--repo|--branch|--dir)
      [ $# -ge 2 ] && [ -n "$2" ] || usage "$1 needs a value"
      case "$1" in
        --name) name=$2 ;; --zone) zone=$2 ;; --accelerator) accelerator=$2 ;; --version) version=$2 ;;
        --project) project=$2 ;; --repo) repo=$2 ;; --branch) branch=$2 ;; --dir) dir=$2 ;;
      esac
      shift ;;
    --spot) spot=1 ;;
    --queued) queued=1 ;;
    --) shift; command=("$@"); break ;;
    create|setup|run|logs|delete)
      [ -z "$action" ] || usage "one action at a time (got $action and $1)"
      action=$1 ;;
    -h|--help) usage ;;
    *) usage "unknown argument: $1" ;;
  esac
  shift
done

[ -n "$action" ] || usage 'missing ACTION (create, setup, run, logs or delete)'
[ -n "$name" ] || usage 'missing --name'
[ -n "$zone" ] || usage 'missing --zone'
# Cloud TPU names: lowercase letters, digits and hyphens, starting with a letter.
[[ "$name" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || usage "bad --name '$name': use lowercase letters, digits and hyphens, starting with a letter"
[[ "$accelerator" =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] || usage "bad --accelerator '$accelerator' (e.g. v4-8, v5p-32, v6e-16)"
if [ "$action" = run ] && [ ${#command[@]} -eq 0 ]; then
  usage 'run needs a command after --, e.g. -- python -m scalelab.run --config experiments/lm_stdlib.py --workdir gs://bucket/run'
fi

gcloud_cmd=(gcloud)
[ -n "$project" ] && gcloud_cmd+=(--project "$project")

on_all_workers() {
  execute "${gcloud_cmd[@]}" compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$action" in
  create)
    if [ "$queued" = 1 ]; then
      args=(compute tpus queued-resources create "$name" --node-id "$name" --zone "$zone"
            --accelerator-type "$accelerator" --runtime-version "$version")
    else
      args=(compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$accelerator" --version "$version")
    fi
    [ "$spot" = 1 ] && args+=(--spot)
    execute "${gcloud_cmd[@]}" "${args[@]}" ;;
  setup)
    if [ -z "$repo" ]; then
      repo=$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null) || usage 'setup needs --repo (no git origin here)'
    fi
    d=$(quote "$dir")
    b=$(quote "$branch")
    remote="set -e; if [ ! -d $d ]; then git clone --branch $b $(quote "$repo") $d; fi; cd $d && git fetch -q && git checkout -q $b && git pull -q && python3 -m pip install -q -e '.[tpu]'"
    on_all_workers "$remote" ;;
  run)
    # $(hostname) is expanded on each worker, not here.
    # shellcheck disable=SC2016
    printf -v remote 'mkdir -p ~/scalelab-logs && cd %s && nohup %s > ~/scalelab-logs/%s-$(hostname).log 2>&1 < /dev/null &' \
      "$(quote "$dir")" "$(quote "${command[@]}")" "$name"
    on_all_workers "$remote" ;;
  logs)
    on_all_workers "tail -n 40 ~/scalelab-logs/$name-*.log" ;;
  delete)
    if [ "$queued" = 1 ]; then
      execute "${gcloud_cmd[@]}" compute tpus queued-resources delete "$name" --zone "$zone" --force --quiet
    else
      execute "${gcloud_cmd[@]}" compute tpus tpu-vm delete "$name" --zone "$zone" --quiet
    fi ;;
esac

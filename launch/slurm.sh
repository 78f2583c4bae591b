#!/usr/bin/env bash
# Submit scalelab work to SLURM.
#
#   launch/slurm.sh [--dry-run] submit --nodes N [options] -- COMMAND ...
#       one run over N nodes (launch/slurm.sbatch; one process per node)
#   launch/slurm.sh [--dry-run] array --commands FILE [--max-parallel K] [options]
#       one array task per line of FILE (launch/slurm_array.sbatch), e.g. from
#       python -m scalelab.sweep --config ... --workdir ... --emit-commands > FILE
#
# options  --gpus-per-node G   --time HH:MM:SS   --partition P   --account A   --job-name NAME
# --dry-run prints the sbatch command instead of running it.
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(dirname "$0")/common.sh"

here=$(cd "$(dirname "$0")" && pwd)
dry_run=0
mode=''
nodes=''
commands=''
max_parallel=''
gpus=''
time_limit=''
partition=''
account=''
job_name=''
command=()

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    submit|array)
      [ -z "$mode" ] || usage "one mode at a time (got $mode and $1)"
      mode=$1 ;;
    --nodes|--commands|--max-parallel|--gpus-per-node|--time|--partition|--account|--job-name)
      [ $# -ge 2 ] && [ -n "$2" ] || usage "$1 needs a value"
      case "$1" in
        --nodes) nodes=$2 ;; --commands) commands=$2 ;; --max-parallel) max_parallel=$2 ;;
        --gpus-per-node) gpus=$2 ;; --time) time_limit=$2 ;; --partition) partition=$2 ;;
        --account) account=$2 ;; --job-name) job_name=$2 ;;
      esac
      shift ;;
    --) shift; command=("$@"); break ;;
    -h|--help) usage ;;
    *) usage "unknown argument: $1" ;;
  esac
  shift
done

[ -n "$mode" ] || usage 'missing mode: submit or array'
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || usage "$1 must be a positive integer, got '$2'"; }

args=(sbatch)
[ -n "$job_name" ] && args+=("--job-name=$job_name")
[ -n "$partition" ] && args+=("--partition=$partition")
[ -n "$account" ] && args+=("--account=$account")
[ -n "$time_limit" ] && args+=("--time=$time_limit")
if [ -n "$gpus" ]; then positive --gpus-per-node "$gpus"; args+=("--gpus-per-node=$gpus"); fi

case "$mode" in
  submit)
    [ -n "$nodes" ] || usage 'submit needs --nodes'
    positive --nodes "$nodes"
    [ ${#command[@]} -gt 0 ] || usage 'submit needs a command after --'
    args+=("--nodes=$nodes" "$here/slurm.sbatch" "${command[@]}") ;;
  array)
    [ -n "$commands" ] || usage 'array needs --commands FILE'
    [ -f "$commands" ] || usage "--commands $commands: no such file"
    count=$(grep -c . "$commands" || true)
    [ "$count" -gt 0 ] || usage "--commands $commands: no commands in it"
    range="0-$((count - 1))"
    if [ -n "$max_parallel" ]; then positive --max-parallel "$max_parallel"; range="$range%$max_parallel"; fi
    args+=("--array=$range" "$here/slurm_array.sbatch" "$commands") ;;
esac

execute "${args[@]}"

#!/usr/bin/env bash
# Submit scalelab work to SLURM.
#
#   launch/slurm.sh [--dry-run] submit --nodes N [--ntasks-per-node T] [options] -- COMMAND ...
#       one run over N nodes, T processes per node (launch/slurm.sbatch; default T = 1,
#       one process per node, as for one process driving all of a node's GPUs)
#   launch/slurm.sh [--dry-run] array --commands FILE [--max-parallel K] [options]
#       one array task per line of FILE (launch/slurm_array.sbatch), e.g. from
#       python -m scalelab.sweep --config ... --workdir ... --emit-commands > FILE
#
# options  --gpus-per-node G   --time HH:MM:SS   --partition P   --account A   --job-name NAME
#          --logs DIR   where the job's logs go (default ./slurm-logs): one file per task
# Prints the job id, its log files and the commands to watch and cancel it.
# --dry-run prints the sbatch command instead of running it.
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(dirname "$0")/common.sh"

here=$(cd "$(dirname "$0")" && pwd)
dry_run=0
mode=''
nodes=''
ntasks=''
logs=slurm-logs
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
    --nodes|--ntasks-per-node|--logs|--commands|--max-parallel|--gpus-per-node|--time|--partition|--account|--job-name)
      [ $# -ge 2 ] && [ -n "$2" ] || usage "$1 needs a value"
      case "$1" in
        --nodes) nodes=$2 ;; --ntasks-per-node) ntasks=$2 ;; --logs) logs=$2 ;;
        --commands) commands=$2 ;; --max-parallel) max_parallel=$2 ;;
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

[ "$mode" = submit ] || [ -z "$ntasks" ] || usage '--ntasks-per-node is for submit (an array task is one process)'
[ -n "$job_name" ] || job_name=$([ "$mode" = submit ] && echo scalelab || echo scalelab-sweep)
logs=$(realpath -m "$logs")

# --parsable: the job id alone on stdout; the log directory reaches srun in slurm.sbatch
args=(sbatch --parsable "--job-name=$job_name" "--export=ALL,SCALELAB_SLURM_LOGS=$logs")
[ -n "$partition" ] && args+=("--partition=$partition")
[ -n "$account" ] && args+=("--account=$account")
[ -n "$time_limit" ] && args+=("--time=$time_limit")
if [ -n "$gpus" ]; then positive --gpus-per-node "$gpus"; args+=("--gpus-per-node=$gpus"); fi

case "$mode" in
  submit)
    [ -n "$nodes" ] || usage 'submit needs --nodes'
    positive --nodes "$nodes"
    if [ -n "$ntasks" ]; then positive --ntasks-per-node "$ntasks"; args+=("--ntasks-per-node=$ntasks"); fi
    [ ${#command[@]} -gt 0 ] || usage 'submit needs a command after --'
    args+=("--nodes=$nodes" "--output=$logs/%x-%j.out" "$here/slurm.sbatch" "${command[@]}") ;;
  array)
    [ -n "$commands" ] || usage 'array needs --commands FILE'
    [ -f "$commands" ] || usage "--commands $commands: no such file"
    count=$(grep -c . "$commands" || true)
    [ "$count" -gt 0 ] || usage "--commands $commands: no commands in it"
    range="0-$((count - 1))"
    if [ -n "$max_parallel" ]; then positive --max-parallel "$max_parallel"; range="$range%$max_parallel"; fi
    args+=("--array=$range" "--output=$logs/%x-%A_%a.out" "$here/slurm_array.sbatch" "$(cd "$(dirname "$commands")" && pwd)/$(basename "$commands")") ;;
esac

if [ "$dry_run" = 1 ]; then
  quote "${args[@]}"
  exit 0
fi
mkdir -p "$logs"  # sbatch does not create it, and a job whose log cannot open loses its output
# sbatch's own error, on one line (it prints two: the cause, then 'Batch job submission failed')
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
if ! job=$("${args[@]}" 2>"$errors"); then
  printf 'error: %s\n' "$(sed 's/^sbatch: error: //' "$errors" | paste -sd ';' | sed 's/;/; /g')" >&2
  exit 2
fi
job=${job%%;*}
echo "submitted job $job ($job_name)"
if [ "$mode" = submit ]; then
  echo "logs: $logs/$job_name-$job-task<N>.out, one per task (the batch script's: $logs/$job_name-$job.out)"
else
  echo "logs: $logs/$job_name-${job}_<i>.out for line i+1 of $commands (one per array task)"
fi
echo "watch: squeue -j $job; after it ends: sacct -j $job (where accounting is enabled)"
echo "stop:  scancel $job (SIGTERM: each run checkpoints and stops; submit it again to resume)"

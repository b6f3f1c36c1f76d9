#!/usr/bin/env bash
# Spread a kvbench sweep over a SLURM job array, then merge the shards (docs/results.md §5).
#
#   bash scripts/slurm_sweep.sh CONFIG.json N [extra sbatch options...]
#
# Submits an array job with N tasks (#SBATCH --array=1-N); task K runs
#   kvbench run CONFIG --shard K/N --resume --output results/<name>-shard<K>
# (--resume: a requeued or resubmitted task keeps the cells it already finished), and a merge job that
# starts once every task succeeded (--dependency=afterok) and writes results/<name>-merged. Set KVBENCH
# to the executable (default ./build/kvbench) and pass partition, time or account options after N;
# KVB_SBATCH_DRY_RUN=1 prints the generated job scripts instead of submitting them.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG.json N [sbatch options...]" >&2
  exit 2
fi
config=$1
n=$2
shift 2
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: N must be a positive integer; found \"$n\"" >&2
  exit 2
fi
if [[ ! -f $config ]]; then
  echo "$0: $config: no such config file" >&2
  exit 2
fi
kvbench=${KVBENCH:-./build/kvbench}
name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$config" 2>/dev/null ||
  sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$config" | head -n1)
if [[ -z $name ]]; then
  echo "$0: $config: no \"name\"" >&2
  exit 2
fi
array_script=$(cat <<EOS
#!/usr/bin/env bash
#SBATCH --job-name=kvbench-$name
#SBATCH --array=1-$n
#SBATCH --output=results/slurm-logs/$name-%a.out
set -euo pipefail
id=\$SLURM_ARRAY_TASK_ID
exec "$kvbench" run "$config" --shard "\$id/$n" --resume -q --output "results/$name-shard\$id"
EOS
)
dirs=""
for ((k = 1; k <= n; k++)); do dirs+=" \"results/$name-shard$k\""; done
merge_script=$(cat <<EOS
#!/usr/bin/env bash
#SBATCH --job-name=kvbench-$name-merge
#SBATCH --output=results/slurm-logs/$name-merge.out
set -euo pipefail
exec "$kvbench" merge$dirs --output "results/$name-merged"
EOS
)

if [[ ${KVB_SBATCH_DRY_RUN:-0} == 1 ]]; then
  printf '%s\n\n%s\n' "$array_script" "$merge_script"
  exit 0
fi
mkdir -p results/slurm-logs
array_id=$(printf '%s\n' "$array_script" | sbatch --parsable "$@")
array_id=${array_id%%;*}
merge_id=$(printf '%s\n' "$merge_script" | sbatch --parsable --dependency=afterok:"$array_id" "$@")
echo "submitted array job $array_id ($n shards of $name) and merge job $merge_id -> results/$name-merged"

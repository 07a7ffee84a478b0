#!/usr/bin/env bash
# Same seed, same threads, two commits: the default run's metrics.json and eval.py's
# predictions.jsonl before and after a restructuring. Each commit runs from its own git
# worktree (PYTHONPATH puts that worktree's src/ first), sharing the synthetic data folder
# so both read identical files.
#
#   bash experiments/2026-12-06_restructure_equivalence/run.sh BEFORE AFTER OUT [overrides...]
set -euo pipefail
before=$1 after=$2 out=$3; shift 3
repo=$(git rev-parse --show-toplevel)
py=$repo/.venv/bin/python
data=$out/data
mkdir -p "$out"
for commit in "$before" "$after"; do
  tree=$out/tree_$commit
  [ -d "$tree" ] || git -C "$repo" worktree add --detach "$tree" "$commit" >/dev/null
  run=$out/run_$commit
  [ -f "$out/eval_$commit/predictions.jsonl" ] && continue  # done by an earlier comparison
  (cd "$tree" && OMP_NUM_THREADS=2 PYTHONPATH="$tree/src" "$py" train.py experiment=stage2_fine \
    seed=42 paths.data_dir="$data" paths.cache_dir="$out/cache_$commit" hydra.run.dir="$run" "$@" \
    > "$out/train_$commit.log" 2>&1)
  (cd "$tree" && OMP_NUM_THREADS=2 PYTHONPATH="$tree/src" "$py" eval.py benchmark=synthetic \
    ckpt_path="$run/checkpoints/last.ckpt" paths.data_dir="$data" hydra.run.dir="$out/eval_$commit" \
    > "$out/eval_$commit.log" 2>&1)
done
"$py" "$(dirname "$0")/compare.py" "$out/run_$before" "$out/run_$after" "$out/eval_$before" "$out/eval_$after"

#!/bin/sh
# Training image entry point: train, then export the best checkpoint as a new version of the
# model repository mounted at $MODEL_REPOSITORY. Extra arguments go to `python -m train`
# (e.g. --epochs 1 --train-limit 2000). A server sharing the repository serves the new
# version after a restart (it loads "latest" at start-up).
set -eu
run_dir="${RUN_DIR:-/runs/$(date -u +%Y%m%dT%H%M%SZ)}"
echo "train-entrypoint: data=$IMDB_DATA preset=$TRAIN_PRESET run=$run_dir repository=$MODEL_REPOSITORY/$MODEL_NAME"
python -m train --data "$IMDB_DATA" --out "$run_dir" --preset "$TRAIN_PRESET" "$@"
# shellcheck disable=SC2086  # EXPORT_ARGS is a list of flags, split on purpose
python -m export --checkpoint "$run_dir/best.pt" --repository "$MODEL_REPOSITORY" --name "$MODEL_NAME" \
    --data "$IMDB_DATA" ${EXPORT_ARGS:-}

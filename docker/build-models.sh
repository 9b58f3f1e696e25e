#!/bin/sh
# Build each default model the store lacks, like `make models`, inside the build image.
# PROFILE=quick|full (default quick); MODELS="sentiment intent ner" to choose; FORCE=1 rebuilds anyway.
# Data: the public data sets mounted at /data (SLIMSERVE_DATA_DIR layout) when present, else the
# Hugging Face Hub (the recipes fall back to it when SLIMSERVE_DATA_DIR is unset).
set -eu
STORE="${SLIMSERVE_STORE:-/models}"
PROFILE="${PROFILE:-quick}"
MODELS="${MODELS:-sentiment intent ner}"
RECIPES_DIR="${RECIPES_DIR:-/src/build/recipes}"
DATA_MOUNT="${DATA_MOUNT:-/data}"

if [ -f "$DATA_MOUNT/sst2/train.tsv" ] || [ -f "$DATA_MOUNT/banking77/train.csv" ] \
   || [ -f "$DATA_MOUNT/conll2003/train.txt" ]; then
  export SLIMSERVE_DATA_DIR="$DATA_MOUNT"
else
  unset SLIMSERVE_DATA_DIR
  echo "build-models: no data mirror at $DATA_MOUNT; recipes will download from the Hugging Face Hub" >&2
fi

for model in $MODELS; do
  if [ "${FORCE:-0}" != "1" ] && ls "$STORE/$model" 2>/dev/null | grep -Eq '^[0-9]+$'; then
    echo "== $model: already in $STORE (FORCE=1 to build a new version)"
    continue
  fi
  echo "== building $model ($PROFILE profile) into $STORE"
  slimserve build "$RECIPES_DIR/$model.yaml" --profile "$PROFILE" --store "$STORE"
done
slimserve models --store "$STORE"

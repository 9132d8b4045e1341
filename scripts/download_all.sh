#!/usr/bin/env bash
# The real datasets in one go: for each, `nanomolmo2 prepare` fetches its train tables from the Hugging Face Hub
# (into huggingface_hub's cache, so nothing is fetched twice), downloads the images/videos they point to, and
# writes DATA_DIR/<name>.jsonl: one data folder with every dataset and their shared media (DATA_DIR/media),
# ready for `nanomolmo2 train --data DATA_DIR` (training reads media only from inside the data folder).
#
#   scripts/download_all.sh [DATA_DIR]          default data/real; re-running resumes (nothing is fetched twice)
#
# Environment (all optional):
#   DATASETS   space-separated subset of the names below, e.g. "pixmo-points pixmo-count"
#   LIMIT      only the first N rows of each table (a quick try)
#   WORKERS    parallel downloads (default 16)
#   RETRIES    retries of a failed transfer (default 3; dead URLs answer 404 and are not retried)
#   VIDEO_DIR  Molmo2-VideoPoint videos you fetched yourself (README.md, "Real data"), inside DATA_DIR
#   HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE    where the tables are cached, and offline use of that cache
# Which dataset each training stage reads: docs/REAL_TRAINING.md. pyarrow reads the parquet tables
# (pip install pyarrow).
set -euo pipefail

DATA=${1:-data/real}
WORKERS=${WORKERS:-16}
ALL="pixmo-cap pixmo-points pixmo-count pixmo-ask-model-anything pixmo-cap-qa
     Molmo2-MultiImageQA Molmo2-VideoPoint tulu-3-sft-mixture"
DATASETS=${DATASETS:-$ALL}

if [ -n "${NANOMOLMO2:-}" ]; then :
elif [ -x .venv/bin/nanomolmo2 ]; then NANOMOLMO2=.venv/bin/nanomolmo2
elif command -v nanomolmo2 >/dev/null 2>&1; then NANOMOLMO2=nanomolmo2
else echo "error: nanomolmo2 not found: run 'make test' (sets up .venv) or 'pip install -e .'" >&2; exit 1
fi

failed=()
for name in $DATASETS; do
    echo "== allenai/$name"
    extra=()
    [ -n "${LIMIT:-}" ] && extra+=(--limit "$LIMIT")
    [ -n "${RETRIES:-}" ] && extra+=(--retries "$RETRIES")
    [ "$name" = Molmo2-VideoPoint ] && [ -n "${VIDEO_DIR:-}" ] && extra+=(--video-dir "$VIDEO_DIR")
    "$NANOMOLMO2" prepare "allenai/$name" --out "$DATA" --workers "$WORKERS" ${extra[@]+"${extra[@]}"} \
        || failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (re-run to resume; the reports are in $DATA/<name>.report.json)" >&2
    exit 1
fi
echo "done: $DATA/<name>.jsonl for each of: $DATASETS"

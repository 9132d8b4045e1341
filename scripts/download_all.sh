#!/usr/bin/env bash
# The real datasets in one go: fetch each Hugging Face table (train split), then `nanomolmo2 prepare` it,
# which downloads the images/videos it points to and writes DATA_DIR/<name>/<name>.jsonl.
#
#   scripts/download_all.sh [DATA_DIR]          default data/real; re-running resumes (nothing is fetched twice)
#
# Environment (all optional):
#   DATASETS   space-separated subset of the names below, e.g. "pixmo-points pixmo-count"
#   LIMIT      only the first N rows of each table (a quick try)
#   WORKERS    parallel downloads (default 16)
#   VIDEO_DIR  Molmo2-VideoPoint videos you fetched yourself (README.md, "Real data")
# Needs huggingface-cli / hf (pip install huggingface_hub) or the `datasets` library (which brings
# huggingface_hub), and pyarrow to read the parquet tables (pip install pyarrow).
set -euo pipefail

DATA=${1:-data/real}
HF=$DATA/hf        # the tables as the hub ships them
MEDIA=$DATA/media  # the images and videos of every dataset, shared (PixMo sets reuse images)
WORKERS=${WORKERS:-16}
ALL="pixmo-cap pixmo-points pixmo-count pixmo-ask-model-anything pixmo-cap-qa pixmo-point-explanations
     Molmo2-MultiImageQA Molmo2-VideoPoint tulu-3-sft-mixture"
DATASETS=${DATASETS:-$ALL}

if [ -n "${NANOMOLMO2:-}" ]; then :
elif [ -x .venv/bin/nanomolmo2 ]; then NANOMOLMO2=.venv/bin/nanomolmo2
elif command -v nanomolmo2 >/dev/null 2>&1; then NANOMOLMO2=nanomolmo2
else echo "error: nanomolmo2 not found: run 'make test' (sets up .venv) or 'pip install -e .'" >&2; exit 1
fi

PYTHON=${PYTHON:-python3}
if command -v huggingface-cli >/dev/null 2>&1; then
    fetch() { huggingface-cli download "$1" --repo-type dataset --local-dir "$2" --include "${@:3}" >/dev/null; }
elif command -v hf >/dev/null 2>&1 && hf download --help >/dev/null 2>&1; then
    fetch() { hf download "$1" --repo-type dataset --local-dir "$2" --include "${@:3}" >/dev/null; }
elif "$PYTHON" -c "import huggingface_hub" >/dev/null 2>&1; then  # installed with `datasets`
    fetch() {
        "$PYTHON" -c 'import sys; from huggingface_hub import snapshot_download
try:
    snapshot_download(sys.argv[1], repo_type="dataset", local_dir=sys.argv[2], allow_patterns=sys.argv[3:])
except Exception as e:
    sys.exit(f"error: fetching {sys.argv[1]} failed: {type(e).__name__}: {e}")' "$@"
    }
else
    echo "error: fetching the tables needs huggingface-cli or the datasets library:" >&2
    echo "       pip install -U huggingface_hub   (or: pip install datasets)" >&2
    exit 1
fi

prepare_one() {  # NAME: fetch its train table, find the folder holding it, prepare it
    local name=$1 dest=$HF/$1 extra=() tables
    local patterns=("*train-*.parquet")
    if [ "$name" = Molmo2-VideoPoint ]; then  # data/ is the default config: every category once
        patterns=("data/train-*.parquet" "youtube_id_to_urls_mapping.json" "generated_videos/*")
    fi
    echo "== allenai/$name"
    fetch "allenai/$name" "$dest" "${patterns[@]}" || return 1
    tables=$(find "$dest" -name 'train-*.parquet' -not -path '*/.cache/*' -exec dirname {} \; | sort -u)
    if [ "$(printf '%s\n' "$tables" | grep -c .)" != 1 ]; then
        echo "error: expected the train table of allenai/$name in one folder under $dest, found: ${tables:-none}" >&2
        return 1
    fi
    if [ "$name" = Molmo2-VideoPoint ]; then
        [ -f "$dest/youtube_id_to_urls_mapping.json" ] && extra+=(--video-urls "$dest/youtube_id_to_urls_mapping.json")
        [ -d "$dest/generated_videos" ] && extra+=(--video-dir "$dest/generated_videos")
        [ -n "${VIDEO_DIR:-}" ] && extra+=(--video-dir "$VIDEO_DIR")
    fi
    [ -n "${LIMIT:-}" ] && extra+=(--limit "$LIMIT")
    "$NANOMOLMO2" prepare "allenai/$name" --from "$tables" --out "$DATA/$name" --media-dir "$MEDIA" \
        --workers "$WORKERS" ${extra[@]+"${extra[@]}"} || return 1
}

failed=()
for name in $DATASETS; do
    prepare_one "$name" || failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (re-run to resume; the reports are in $DATA/<name>/<name>.report.json)" >&2
    exit 1
fi
echo "done: $DATA/<name>/<name>.jsonl for each of: $DATASETS"

#!/usr/bin/env bash
# Shared helpers for every method's scripts (source it; do not run it).
#
# A method script is a thin wrapper:
#
#     #!/usr/bin/env bash
#     source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
#     lib_setup MaPLe vit_b16_c2_ep5_batch4_2ctx 5     # trainer, default config, default load epoch
#     base2new_train "$@"
#
# Positional arguments are `<dataset> <seed>` (plus `<shots>` for few-shot); every further argument is
# a `KEY VALUE` config override passed through to train.py after the script's own overrides (so it wins).
#
# Environment (all optional):
#   DATA     dataset root                                  default ./data under the repo root
#   OUTPUT   output root                                   default ./output under the repo root
#            (a relative DATA or OUTPUT you set is taken from the directory you run the script from)
#   PYTHON   python interpreter                            default python
#   CFG      trainer config name (configs/trainers/<CFG_DIR>/<CFG>.yaml)  default: set by the script
#   LOADEP   epoch to load for evaluation, or "best"       default: set by the script; a numeric default
#            (model-best.pth.tar)                          gives way to an OPTIM.MAX_EPOCH argument
#   SHOTS    shots per class for base2new / xd             default 16, or a DATASET.NUM_SHOTS override
#   SOURCE   dataset the xd/dg model was trained on        default imagenet
#   SUBS     label spaces base2new_test evaluates          default "new all"
#   FORCE    1 = run even if the output dir holds a finished run
#   BACKBONE CLIP backbone for every run (MODEL.BACKBONE.NAME), e.g. ViT-L/14 or
#            open_clip:ViT-L-14/datacomp_xl_s13b_b90k; outputs go to <C>@<backbone> (/ and : as -), so
#            they never mix with the config's own backbone's. A MODEL.BACKBONE.NAME argument still wins.
#
# Output layout (relative to OUTPUT; <C> = CFG, <K> = shots, <S> = seed):
#   base-to-new   base2new/train_base/<dataset>/shots_<K>/<TRAINER>/<C>/seed<S>
#                 base2new/test_{new,all}/<dataset>/shots_<K>/<TRAINER>/<C>/seed<S>
#   cross-dataset / domain generalisation (as the official repositories)
#                 <SOURCE>/<TRAINER>/<C>_<K>shots/seed<S>                 (training)
#                 evaluation/<TRAINER>/<C>_<K>shots/<dataset>/seed<S>      (evaluation)
#   few-shot      fewshot/<dataset>/shots_<K>/<TRAINER>/<C>/seed<S>
#   zero-shot     zeroshot/<TRAINER>/<C>/<dataset>
#   <dataset> is the name given, except with a DATASET.IMAGE_FOLDER or DATASET.IMAGE_LIST override (your own
#   images, configs/datasets/image_folder.yaml): then <dataset>_<folder or CSV name>_<hash>, the hash being
#   the cksum of its absolute path, so that runs on two folders never share a folder (lib_dataset_dir).
#
# Runs with KEY VALUE overrides are placed apart: the last folder gets `+overrides-<hash>` (seed1 becomes
# seed1+overrides-1a2b3c4d; <hash> = first 8 hex digits of the sha256 of the overrides, one per line,
# DATASET.NUM_SHOTS, DATASET.IMAGE_FOLDER and DATASET.IMAGE_LIST left out since <K> and <dataset> show them), so a smoke test with `MODEL.BACKBONE.NAME random:tiny`
# never lands in the folder of the real run. tools/layout.py mirrors this; every run also records its
# settings in run.json, and train.py refuses a folder recorded with other settings (docs/RELIABILITY.md).
#
# Skip-if-done: a training job is skipped when its log.txt has the line `Finish training` followed by
# `Elapsed: ...` (printed after the final evaluation), an evaluation job when its log.txt has an accuracy
# line (`* accuracy: ...%`). An unfinished training run is simply started again: the engine resumes from
# the checkpoints in its output dir, and log.txt is always the latest run (older logs: log.txt-<time>).

set -euo pipefail

# A relative DATA or OUTPUT is taken from the caller's directory; the scripts then run from the repo root.
lib_from_caller() {
    case "$1" in
        /*) echo "$1" ;;
        *) echo "$PWD/$1" ;;
    esac
}
if [ -n "${DATA:-}" ]; then DATA="$(lib_from_caller "$DATA")"; else DATA=./data; fi
if [ -n "${OUTPUT:-}" ]; then OUTPUT="$(lib_from_caller "$OUTPUT")"; else OUTPUT=./output; fi

LIB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$LIB_ROOT"

PYTHON="${PYTHON:-python}"
SOURCE="${SOURCE:-imagenet}"
SUBS="${SUBS:-new all}"
FORCE="${FORCE:-0}"

lib_die() {
    echo "error: $*" >&2
    exit 2
}

# lib_setup TRAINER DEFAULT_CFG DEFAULT_LOADEP [CFG_DIR]
# CFG and LOADEP from the environment win over the defaults; CFG_DIR defaults to TRAINER.
# DEFAULT_LOADEP "-" means the method has no checkpoint to load (zero-shot).
lib_setup() {
    [ $# -ge 3 ] || lib_die "lib_setup needs TRAINER DEFAULT_CFG DEFAULT_LOADEP [CFG_DIR], got: $*"
    TRAINER="$1"
    CFG="${CFG:-$2}"
    LIB_LOADEP_ENV="${LOADEP:-}"
    LOADEP="${LOADEP:-$3}"
    CFG_DIR="${4:-$TRAINER}"
    CFG_FILE="configs/trainers/${CFG_DIR}/${CFG}.yaml"
    [ -f "$CFG_FILE" ] || lib_die "trainer config $LIB_ROOT/$CFG_FILE not found (CFG=$CFG)"
    LIB_BACKBONE=()
    if [ -n "${BACKBONE:-}" ]; then
        LIB_BACKBONE=(MODEL.BACKBONE.NAME "$BACKBONE")
        CFG="${CFG}@$(printf '%s' "$BACKBONE" | tr '/:' '--')"
    fi
}

# lib_opt KEY DEFAULT [KEY VALUE...]: value of the last KEY override among the pairs, else DEFAULT.
lib_opt() {
    local key="$1" value="$2"
    shift 2
    while [ $# -ge 2 ]; do
        [ "$1" = "$key" ] && value="$2"
        shift 2
    done
    echo "$value"
}

# lib_check_args NAME MIN "usage" ARGS...: positional count and KEY VALUE pairing.
lib_check_args() {
    local name="$1" npos="$2" usage="$3"
    shift 3
    [ $# -ge "$npos" ] || lib_die "usage: $name $usage [KEY VALUE ...]"
    shift "$npos"
    [ $(($# % 2)) -eq 0 ] || lib_die "$name: trailing config overrides must be KEY VALUE pairs, got: $*"
}

lib_dataset_cfg() {
    local file="configs/datasets/$1.yaml"
    [ -f "$file" ] || lib_die "dataset config $LIB_ROOT/$file not found (dataset '$1')"
    echo "$file"
}

# lib_dataset_dir DATASET [KEY VALUE...]: the dataset's name in the output layout (see the header).
# A relative DATASET.IMAGE_FOLDER / IMAGE_LIST is taken from DATA, as train.py takes it from DATASET.ROOT.
lib_dataset_dir() {
    local dataset="$1"
    shift
    local folder list src name crc
    folder="$(lib_opt DATASET.IMAGE_FOLDER "" "$@")"
    list="$(lib_opt DATASET.IMAGE_LIST "" "$@")"
    src="${folder:-$list}"
    if [ -z "$src" ]; then
        echo "$dataset"
        return 0
    fi
    case "$src" in
        /*) ;;
        *) case "$DATA" in /*) src="$DATA/$src" ;; *) src="$LIB_ROOT/${DATA#./}/$src" ;; esac ;;
    esac
    src="${src%"${src##*[!/]}"}"
    name="$(basename "$src")"
    [ -n "$folder" ] || name="${name%.*}" # a CSV: its stem
    crc="$(printf '%s' "$src" | cksum)"
    printf '%s_%s_%08x\n' "$dataset" "${name//[^A-Za-z0-9._-]/_}" "${crc%% *}"
}

# lib_done DIR KIND: KIND is train or eval.
lib_done() {
    local log="$1/log.txt"
    [ "$FORCE" = "1" ] && return 1
    [ -f "$log" ] || return 1
    if [ "$2" = "train" ]; then
        # `Elapsed:` comes after the final evaluation: a run whose test crashed is not done.
        awk '$0 == "Finish training" { f = 1 } f && /^Elapsed: / { ok = 1 } END { exit !ok }' "$log"
    else
        grep -Eq '\* accuracy: [0-9.eE+-]+%' "$log"
    fi
}

# lib_run KIND DIR DATASET SEED [train.py flags...] -- [KEY VALUE...]
lib_run() {
    local kind="$1" dir="$2" dataset="$3" seed="$4"
    shift 4
    local flags=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        flags+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    local dataset_cfg
    dataset_cfg="$(lib_dataset_cfg "$dataset")"
    if lib_done "$dir" "$kind"; then
        echo "Results are available in ${dir} (finished). Skip this job (FORCE=1 to rerun)"
        return 0
    fi
    echo "Run this job and save the output to ${dir}"
    "$PYTHON" train.py \
        --root "$DATA" \
        --seed "$seed" \
        --trainer "$TRAINER" \
        --dataset-config-file "$dataset_cfg" \
        --config-file "$CFG_FILE" \
        --output-dir "$dir" \
        "${flags[@]}" \
        ${LIB_BACKBONE[@]+"${LIB_BACKBONE[@]}"} \
        "$@"
}

# lib_load_flags MODEL_DIR [KEY VALUE...]: sets LIB_LOAD to the eval-only flags that load the trained
# checkpoint (an array, so paths may contain spaces).
lib_load_flags() {
    local model_dir="$1"
    shift
    LIB_LOAD=(--eval-only)
    [ "$LOADEP" = "-" ] && return 0
    [ -d "$model_dir" ] || lib_die "no trained model at $model_dir (run the matching training script first)"
    # LOADEP "best" (BMIP's model selection) loads model-best.pth.tar whatever OPTIM.MAX_EPOCH says.
    local epoch="$LIB_LOADEP_ENV"
    if [ -z "$epoch" ]; then
        if [ "$LOADEP" = best ]; then epoch=best; else epoch="$(lib_opt OPTIM.MAX_EPOCH "$LOADEP" "$@")"; fi
    fi
    if [ "$epoch" = best ]; then
        LIB_LOAD+=(--model-dir "$model_dir" --best)
    else
        LIB_LOAD+=(--model-dir "$model_dir" --load-epoch "$epoch")
    fi
}

lib_sha256() {
    if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi
}

# lib_place DIR [KEY VALUE...]: DIR itself without overrides, else DIR+overrides-<hash> (see the header).
lib_place() {
    local dir="$1" lines=""
    shift
    while [ $# -ge 2 ]; do
        case "$1" in
            DATASET.NUM_SHOTS | DATASET.IMAGE_FOLDER | DATASET.IMAGE_LIST) ;; # the path shows these
            *) lines+="$1"$'\n'"$2"$'\n' ;;
        esac
        shift 2
    done
    if [ -z "$lines" ]; then
        echo "$dir"
    else
        echo "${dir}+overrides-$(printf '%s' "$lines" | lib_sha256 | cut -c1-8)"
    fi
}

lib_shots() {
    lib_opt DATASET.NUM_SHOTS "${SHOTS:-16}" "$@"
}

# base2new_train <dataset> <seed> [KEY VALUE...]: train on the base classes (their test accuracy is
# logged at the end). Zero-shot methods (LOADEP "-") have nothing to train: they evaluate the base classes.
base2new_train() {
    lib_check_args base2new_train 2 "<dataset> <seed>" "$@"
    local dataset="$1" seed="$2"
    shift 2
    local shots name
    shots="$(lib_shots "$@")"
    name="$(lib_dataset_dir "$dataset" "$@")"
    local dir
    dir="$(lib_place "$OUTPUT/base2new/train_base/${name}/shots_${shots}/${TRAINER}/${CFG}/seed${seed}" "$@")"
    local run=(train "$dir" "$dataset" "$seed")
    if [ "$LOADEP" = "-" ]; then
        run=(eval "$dir" "$dataset" "$seed" --eval-only)
    fi
    lib_run "${run[@]}" -- DATASET.NUM_SHOTS "$shots" DATASET.SUBSAMPLE_CLASSES base "$@"
}

# base2new_test <dataset> <seed> [KEY VALUE...]: evaluate the base-trained model on each label space in
# SUBS (new classes, and all classes at once).
base2new_test() {
    lib_check_args base2new_test 2 "<dataset> <seed>" "$@"
    local dataset="$1" seed="$2"
    shift 2
    local shots name
    shots="$(lib_shots "$@")"
    name="$(lib_dataset_dir "$dataset" "$@")"
    local common="${name}/shots_${shots}/${TRAINER}/${CFG}/seed${seed}"
    local sub
    lib_load_flags "$(lib_place "$OUTPUT/base2new/train_base/${common}" "$@")" "$@"
    for sub in $SUBS; do
        lib_run eval "$(lib_place "$OUTPUT/base2new/test_${sub}/${common}" "$@")" "$dataset" "$seed" "${LIB_LOAD[@]}" -- \
            DATASET.NUM_SHOTS "$shots" DATASET.SUBSAMPLE_CLASSES "$sub" "$@"
    done
}

# xd_train <dataset> <seed> [KEY VALUE...]: train on all classes of the source dataset (ImageNet in the
# papers) for cross-dataset transfer and domain generalisation.
xd_train() {
    lib_check_args xd_train 2 "<dataset> <seed>" "$@"
    local dataset="$1" seed="$2"
    shift 2
    local shots name
    shots="$(lib_shots "$@")"
    name="$(lib_dataset_dir "$dataset" "$@")"
    lib_run train "$(lib_place "$OUTPUT/${name}/${TRAINER}/${CFG}_${shots}shots/seed${seed}" "$@")" "$dataset" "$seed" -- \
        DATASET.NUM_SHOTS "$shots" "$@"
}

# xd_test <dataset> <seed> [KEY VALUE...]: evaluate the SOURCE-trained model on all classes of <dataset>.
# Domain generalisation is the same evaluation on the ImageNet variants (dg_test.sh).
xd_test() {
    lib_check_args xd_test 2 "<dataset> <seed>" "$@"
    local dataset="$1" seed="$2"
    shift 2
    local shots name
    shots="$(lib_shots "$@")"
    name="$(lib_dataset_dir "$dataset" "$@")"
    lib_load_flags "$(lib_place "$OUTPUT/${SOURCE}/${TRAINER}/${CFG}_${shots}shots/seed${seed}" "$@")" "$@"
    lib_run eval "$(lib_place "$OUTPUT/evaluation/${TRAINER}/${CFG}_${shots}shots/${name}/seed${seed}" "$@")" \
        "$dataset" "$seed" "${LIB_LOAD[@]}" -- "$@"
}

# fewshot <dataset> <seed> <shots> [KEY VALUE...]: train and test on all classes with <shots> per class.
fewshot() {
    lib_check_args fewshot 3 "<dataset> <seed> <shots>" "$@"
    local dataset="$1" seed="$2" shots="$3" name
    shift 3
    name="$(lib_dataset_dir "$dataset" "$@")"
    lib_run train "$(lib_place "$OUTPUT/fewshot/${name}/shots_${shots}/${TRAINER}/${CFG}/seed${seed}" "$@")" \
        "$dataset" "$seed" -- DATASET.NUM_SHOTS "$shots" "$@"
}

# zeroshot <dataset> [KEY VALUE...]: evaluate without training on all classes.
zeroshot() {
    lib_check_args zeroshot 1 "<dataset>" "$@"
    local dataset="$1" name
    shift
    name="$(lib_dataset_dir "$dataset" "$@")"
    lib_run eval "$(lib_place "$OUTPUT/zeroshot/${TRAINER}/${CFG}/${name}" "$@")" "$dataset" 1 --eval-only -- "$@"
}

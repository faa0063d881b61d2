#!/usr/bin/env bash
# The GPU run of a device bundle (written by `cargo xtask device-bundle`): on a machine
# with an NVIDIA GPU, CUDA 13 and PyTorch, from the bundle folder alone.
#
#   bash bundle/gpu/run.sh                  # the full run, results into $OUT
#   bash bundle/gpu/run.sh --dry-run        # the same stages on the CPU, tiny sizes
#
# Stages (each under `timeout`, a failure goes on to the next stage):
#   setup   unpack the binary, find the CUDA libraries it needs, record the machine
#   probe   one tiny training step on the device
#   data    extract and verify Omniglot from the bundled zips (--mirror)
#   bench   `bench train` at batch 128 and 512 pairs, f32 and TF32
#   train   the paper preset for a wall-clock budget (TF32 if it was faster)
#   eval    the trained network on Lake's 20 runs and on Koch's test split
#   torch   the bundled torch_koch.py on the same GPU, f32 and TF32, same batches
# Every stage appends one JSON line to $OUT/results.jsonl:
#   {"stage", "status": ok|failed|timeout|skipped, "seconds", "result": <its JSON>}
# Files in $OUT (at most 8): results.jsonl, summary.txt, run.log, env.txt,
# metrics.jsonl, loss.png, validation.png.
#
# Environment: OUT (default ./device-out), SIAMESE_BUDGET_S (total seconds for the
# stages, default 560: the run fits a 600-second call), SIAMESE_TRAIN_MINUTES (the
# most training minutes, default 5; less when the budget is short), PYTHON (default python3),
# SIAMESE_BIN (a binary to use instead of the bundled one), SIAMESE_LD_LIBRARY_PATH
# (folders searched first for the CUDA libraries), SIAMESE_WORK (scratch folder).
set -uo pipefail

BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help)
            sed -n '2,25p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "run.sh: unknown argument $arg (expected --dry-run)" >&2
            exit 2
            ;;
    esac
done

OUT="${OUT:-$PWD/device-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="${SIAMESE_WORK:-$(mktemp -d /tmp/siamese-gpu.XXXXXX)}"
mkdir -p "$WORK"
PYTHON="${PYTHON:-python3}"
BUDGET_S="${SIAMESE_BUDGET_S:-560}"
TRAIN_MINUTES="${SIAMESE_TRAIN_MINUTES:-5}"
START_S=$SECONDS
# Panics with a backtrace, errors on one line, logs without colour codes.
export RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=0 NO_COLOR=1
RESULTS="$OUT/results.jsonl"
LOG="$OUT/run.log"
ENV_TXT="$OUT/env.txt"
: >"$RESULTS"
: >"$LOG"
: >"$ENV_TXT"

if [[ $DRY_RUN == 1 ]]; then
    DEVICE=cpu
    BATCHES=(4 8)
    BENCH_STEPS=(1 1)
    ARCH_FLAGS=(--arch koch)
    TRAIN_MINUTES="${SIAMESE_TRAIN_MINUTES:-0.2}"
    EVAL_FLAGS=(--trials 40)
else
    DEVICE=cuda
    BATCHES=(128 512)
    BENCH_STEPS=(10 3)
    ARCH_FLAGS=(--arch koch)
    EVAL_FLAGS=()
fi
DATA="$WORK/omniglot"
MIRROR="$BUNDLE/omniglot"
RUNS="$WORK/runs"

say() { echo "[run.sh $((SECONDS - START_S))s $(date -u +%T)] $*" | tee -a "$LOG"; }
remaining() { echo $((BUDGET_S - (SECONDS - START_S))); }

# emit STAGE STATUS SECONDS [STDOUT_FILE] [EXTRA_JSON]: one line of results.jsonl.
emit() {
    "$PYTHON" - "$@" >>"$RESULTS" 2>>"$LOG" <<'PY' || printf '{"stage":"%s","status":"%s","seconds":%s,"result":null}\n' "$1" "$2" "$3" >>"$RESULTS"
import json, sys
stage, status, secs = sys.argv[1:4]
path = sys.argv[4] if len(sys.argv) > 4 else ""
extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] else {}
result = None
if path:
    try:
        text = open(path).read().strip()
        try:
            result = json.loads(text)
        except ValueError:
            lines = [l for l in text.splitlines() if l.strip().startswith("{")]
            result = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        result = None
line = {"stage": stage, "status": status, "seconds": float(secs), "result": result}
line.update(extra)
print(json.dumps(line))
PY
}

# stage NAME MAX_S RESERVE_S [EXTRA_JSON] -- CMD...: runs CMD under `timeout` for at
# most MAX_S seconds, and only as long as RESERVE_S seconds stay for later stages;
# its stdout is the stage's result, its stderr goes to run.log.
stage() {
    local name=$1 max=$2 reserve=$3 extra=""
    shift 3
    if [[ $1 != "--" ]]; then
        extra=$1
        shift
    fi
    shift # --
    local left=$(($(remaining) - reserve))
    local limit=$((max < left ? max : left))
    if ((limit < 5)); then
        say "stage $name: skipped (out of time: ${left}s left for it)"
        emit "$name" skipped 0 "" "$extra"
        return 1
    fi
    say "stage $name (at most ${limit}s): $*"
    local t0=$SECONDS out="$WORK/$name.out"
    echo "==== $name: $*" >>"$LOG"
    timeout --kill-after=10 "$limit" "$@" >"$out" 2>>"$LOG"
    local rc=$? status=ok
    if ((rc == 124 || rc == 137)); then
        status=timeout
    elif ((rc != 0)); then
        status=failed
    fi
    cat "$out" >>"$LOG"
    say "stage $name: $status (exit $rc) in $((SECONDS - t0))s"
    emit "$name" "$status" "$((SECONDS - t0))" "$out" "$extra"
    [[ $status == ok ]]
}

# ---- setup: the binary and its libraries ----
say "bundle $BUNDLE, results in $OUT, scratch $WORK, device $DEVICE, budget ${BUDGET_S}s"
if [[ -n ${SIAMESE_BIN:-} ]]; then
    BIN="$SIAMESE_BIN"
else
    BIN="$WORK/siamese-cli"
    if command -v xz >/dev/null; then
        xz -dc "$BUNDLE/siamese-cli.xz" >"$BIN"
    else
        "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$BUNDLE/siamese-cli.xz" "$BIN"
    fi
    chmod +x "$BIN"
fi

{
    echo "# date"
    date -u
    echo "# uname"
    uname -a
    echo "# nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    echo "# manifest"
    cat "$BUNDLE/MANIFEST.json" 2>&1
    echo "# nproc"
    nproc
} >>"$ENV_TXT" 2>&1

missing_libs() { ldd "$BIN" 2>/dev/null | awk '/not found/ {print $1}'; }
LIB_DIRS=()
if [[ -n ${SIAMESE_LD_LIBRARY_PATH:-} ]]; then
    IFS=: read -r -a LIB_DIRS <<<"$SIAMESE_LD_LIBRARY_PATH"
fi
if [[ -n "$(missing_libs)" ]]; then
    # The driver's and the toolkit's usual folders, then the CUDA wheels beside PyTorch.
    SITE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu \
        /usr/lib64 ${SITE:+"$SITE"/nvidia/cu13/lib "$SITE"/nvidia/*/lib}; do
        [[ -d $d && ":$(IFS=:; echo "${LIB_DIRS[*]:-}"):" != *":$d:"* ]] && LIB_DIRS+=("$d")
    done
fi
if ((${#LIB_DIRS[@]})); then
    LD_EXTRA="$(IFS=:; echo "${LIB_DIRS[*]}")"
    export LD_LIBRARY_PATH="$LD_EXTRA${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
{
    echo "# LD_LIBRARY_PATH"
    echo "${LD_LIBRARY_PATH:-}"
    echo "# ldd $BIN"
    ldd "$BIN" 2>&1
} >>"$ENV_TXT"
MISSING="$(missing_libs | tr '\n' ' ')"
if [[ -n $MISSING ]]; then
    say "setup: FAILED: the binary cannot start, libraries not found: $MISSING(searched ${LD_LIBRARY_PATH:-nothing}); see env.txt"
    emit setup failed 0 "" "{\"missing_libraries\": \"$MISSING\"}"
    SETUP_OK=0
else
    "$BIN" --version >"$WORK/version.out" 2>>"$LOG"
    SETUP_OK=$((($? == 0) ? 1 : 0))
    say "setup: $(cat "$WORK/version.out") $([[ $SETUP_OK == 1 ]] && echo ok || echo FAILED)"
    emit setup "$([[ $SETUP_OK == 1 ]] && echo ok || echo failed)" 0 "" \
        "{\"version\": \"$(tr -d '"\n' <"$WORK/version.out")\", \"ld_library_path\": \"${LD_LIBRARY_PATH:-}\"}"
fi

# GPU load every 2 s while the stages run (appended to env.txt at the end).
GPU_LOG="$WORK/gpu-load.csv"
SMI_PID=""
if command -v nvidia-smi >/dev/null && [[ $DEVICE == cuda ]]; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw \
        --format=csv -l 2 >"$GPU_LOG" 2>&1 &
    SMI_PID=$!
fi

DATA_FLAGS=(--data "$DATA" --mirror "$MIRROR")
TRAIN_TF32=()
if [[ $SETUP_OK == 1 ]]; then
    # ---- probe: does the device answer and run a step? ----
    stage probe 120 330 -- "$BIN" bench train --device "$DEVICE" --arch koch35 \
        --batch-pairs 4 --steps 1 --json

    # ---- data ----
    stage data 120 330 -- "$BIN" data "${DATA_FLAGS[@]}" --json

    # ---- bench: ours, f32 and TF32, both batch sizes ----
    for i in "${!BATCHES[@]}"; do
        b=${BATCHES[$i]}
        s=${BENCH_STEPS[$i]}
        stage "bench-$b-f32" 60 330 "{\"batch_pairs\": $b, \"tf32\": false}" -- \
            "$BIN" bench train --device "$DEVICE" "${ARCH_FLAGS[@]}" --batch-pairs "$b" \
            --steps "$s" --json
        stage "bench-$b-tf32" 60 330 "{\"batch_pairs\": $b, \"tf32\": true}" -- \
            "$BIN" --tf32 bench train --device "$DEVICE" "${ARCH_FLAGS[@]}" --batch-pairs "$b" \
            --steps "$s" --json
    done
fi

if [[ $SETUP_OK == 1 ]]; then
    # ---- train: TF32 if it was at least 5% faster at batch 128 ----
    faster="$("$PYTHON" - "$RESULTS" "${BATCHES[0]}" 2>>"$LOG" <<'PY' || echo no
import json, sys
rate = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["status"] == "ok" and r["stage"].startswith(f"bench-{sys.argv[2]}-"):
        rate[r["stage"].rsplit("-", 1)[1]] = r["result"]["train_pairs_per_s"]
print("yes" if rate.get("tf32", 0) > 1.05 * rate.get("f32", float("inf")) else "no")
PY
)"
    if [[ $faster == yes ]]; then
        TRAIN_TF32=(--tf32)
    fi
    say "training with ${TRAIN_TF32[*]:-f32} (TF32 at least 5% faster in bench: $faster)"
    # Leave 70 s for the evaluations, 70 s for PyTorch, 45 s for loading the data, the
    # last validation and the checkpoints.
    left=$(($(remaining) - 70 - 70 - 45))
    minutes="$("$PYTHON" -c "print(round(max(0.1, min($TRAIN_MINUTES, $left / 60)), 2))" 2>/dev/null || echo 1)"
    stage train 900 140 "{\"max_minutes\": $minutes, \"tf32\": $([[ ${#TRAIN_TF32[@]} -gt 0 ]] && echo true || echo false)}" -- \
        "$BIN" "${TRAIN_TF32[@]}" train --preset paper --device "$DEVICE" "${DATA_FLAGS[@]}" \
        --runs "$RUNS" --name gpu --max-minutes "$minutes" --validate-every 500 --json
    for f in metrics.jsonl loss.png validation.png; do
        [[ -f $RUNS/gpu/$f ]] && cp "$RUNS/gpu/$f" "$OUT/$f"
    done

    # ---- eval: Lake's 20 runs and Koch's test split ----
    if [[ -f $RUNS/gpu/best/model.safetensors ]]; then
        stage eval-lake 60 105 -- "$BIN" "${TRAIN_TF32[@]}" eval --model "$RUNS/gpu" \
            --device "$DEVICE" "${DATA_FLAGS[@]}" --lake-runs --json
        stage eval-koch-test 60 70 -- "$BIN" "${TRAIN_TF32[@]}" eval --model "$RUNS/gpu" \
            --device "$DEVICE" "${DATA_FLAGS[@]}" --way 20 "${EVAL_FLAGS[@]}" --json
    else
        say "eval: skipped (no best checkpoint in $RUNS/gpu)"
        emit eval-lake skipped 0
        emit eval-koch-test skipped 0
    fi
fi

# ---- torch: the PyTorch reference on the same device ----
for i in "${!BATCHES[@]}"; do
    b=${BATCHES[$i]}
    s=${BENCH_STEPS[$i]}
    stage "torch-$b-f32" 60 0 "{\"batch_pairs\": $b, \"tf32\": false}" -- \
        "$PYTHON" "$BUNDLE/torch_koch.py" --device "$DEVICE" --batch-pairs "$b" --steps "$s"
    if [[ $DEVICE == cuda ]]; then
        stage "torch-$b-tf32" 60 0 "{\"batch_pairs\": $b, \"tf32\": true}" -- \
            "$PYTHON" "$BUNDLE/torch_koch.py" --device cuda --tf32 --batch-pairs "$b" --steps "$s"
    fi
done

if [[ -n $SMI_PID ]]; then
    kill "$SMI_PID" 2>/dev/null
    wait "$SMI_PID" 2>/dev/null
    {
        echo "# GPU load during the stages (nvidia-smi -l 2; times UTC as in run.log)"
        cat "$GPU_LOG"
    } >>"$ENV_TXT"
fi

# ---- summary ----
"$PYTHON" - "$RESULTS" >"$OUT/summary.txt" 2>>"$LOG" <<'PY' || cp "$RESULTS" "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'stage':<18} {'status':<8} {'s':>5}  result")
for r in rows:
    res = r.get("result") or {}
    keys = ["impl", "train_pairs_per_s", "embed_images_per_s", "peak_rss_mib",
            "reason", "step", "best", "accuracy", "correct", "trials", "ci95_low", "ci95_high"]
    parts = [f"{k}={res[k]}" for k in keys if isinstance(res, dict) and k in res]
    for k in ("missing_libraries", "version", "max_minutes", "tf32"):
        if k in r:
            parts.append(f"{k}={r[k]}")
    print(f"{r['stage']:<18} {r['status']:<8} {r['seconds']:>5.0f}  {' '.join(parts)}")
PY
cat "$OUT/summary.txt"
say "done in $((SECONDS - START_S))s; results in $OUT"

#!/usr/bin/env bash
# The GPU run of a device bundle (written by `cargo xtask device-bundle`): on a machine
# with an NVIDIA GPU, CUDA 13 and PyTorch, from the bundle folder alone.
#
#   bash bundle/gpu/run.sh                  # the full run, results into $OUT
#   bash bundle/gpu/run.sh --dry-run        # the same stages on the CPU, tiny sizes
#
# Stages (each under `timeout`, a failure goes on to the next stage):
#   setup    unpack the binary, find the CUDA libraries it needs, record the machine
#   probe    one tiny training step on the device
#   data     extract and verify Omniglot and the MNIST test set from the bundle
#   rate     200 episodes of the default preset: the GPU's episodes per second,
#            alone, then with 4 runs side by side (rate-par1..4)
#   train-*  the runs that fit in the time left, in order: `long` (4 networks of
#            22,000 episodes, one after another, scored together),
#            `default` (22,000, what it sizes itself to on the 2-core machine),
#            `default` seeds 1 and 2: all four side by side if the shared rate lets
#            them finish, else the three seeds of `default` side by side if `long`
#            does not fit alone, else one after another at the rate alone; if none
#            fits, `default` with --max-minutes (it fits its episodes to them)
#   eval-*   each trained run's best checkpoint on Lake's 20 runs, the first one's
#            also on Koch's test split and MNIST (eval's defaults: 400 trials,
#            ±1 px shift averaging)
#   bench, torch   Koch's network, ours and PyTorch's torch_koch.py, batch 128, f32
#            and TF32, if time is left
# Every stage appends one JSON line to $OUT/results.jsonl:
#   {"stage", "status": ok|failed|timeout|skipped, "seconds", "result": <its JSON>}
# Files in $OUT (at most 8): results.jsonl, summary.txt, run.log, env.txt and
# runs.tar, the trained run folders (config, metrics.jsonl, curves, best/ and last/
# checkpoints: evaluate them anywhere with `eval --model`).
#
# Environment: OUT (default ./device-out), SIAMESE_BUDGET_S (total seconds for the
# stages, default 560: the run fits a 600-second call), PYTHON (default python3),
# SIAMESE_BIN (a binary to use instead of the bundled one), SIAMESE_LD_LIBRARY_PATH
# (folders searched first for the CUDA libraries), SIAMESE_WORK (scratch folder).
set -uo pipefail

BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help)
            sed -n '2,33p' "${BASH_SOURCE[0]}"
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
    BENCH_STEPS=1
    BENCH_SHAPE=(--arch koch35 --batch-pairs 8)
    # Tiny runs: the presets' shapes with a few episodes each.
    RATE_STEPS=40
    declare -A PRESET_STEPS=([default]=4 [long]=16)
    STEP_FLAGS=(--validation-trials 40 --validate-every 2)
    EVAL_FLAGS=(--trials 40)
else
    DEVICE=cuda
    BENCH_STEPS=10
    BENCH_SHAPE=(--arch koch --batch-pairs 128)
    RATE_STEPS=200
    declare -A PRESET_STEPS=([default]=22000 [long]=88000)
    STEP_FLAGS=()
    EVAL_FLAGS=()
fi
# Networks per run: PRESET_STEPS counts the episodes of all of them.
declare -A PRESET_MEMBERS=([default]=1 [long]=4)
DATA="$WORK/omniglot"
MNIST="$WORK/mnist"
MIRROR="$BUNDLE/omniglot"
MNIST_MIRROR="$BUNDLE/mnist"
RUNS="$WORK/runs"

say() { echo "[run.sh $((SECONDS - START_S))s $(date -u +%T)] $*" | tee -a "$LOG"; }
remaining() { echo $((BUDGET_S - (SECONDS - START_S))); }

# rate_of RUN_DIR: "EPISODES_PER_S SECONDS_PER_VALIDATION" from a run's metrics,
# counted from its first logged step (the start, CUDA modules and first batches, apart).
rate_of() {
    "$PYTHON" - "$1/metrics.jsonl" 2>>"$LOG" <<'PY' || echo 0 1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in rows if r.get("kind") == "train" and r.get("elapsed_s")]
val = [r["seconds"] for r in rows if r.get("kind") == "validation"]
a, b = (train[0], train[-1]) if train else ({}, {})
rate = (b["step"] - a["step"]) / max(b["elapsed_s"] - a["elapsed_s"], 1e-9) if len(train) > 1 else 0
print(round(rate, 2), round(max(val) if val else 1.0, 3))
PY
}

# need_s STEPS RATE VAL_S: seconds a run of STEPS episodes needs at RATE: the
# episodes, a validation every 500, and 40 s to start and save.
need_s() {
    "$PYTHON" -c "r=$2; print(int($1 / r * 1.05 + $1 / 500 * $3 * 1.2 + 40) if r > 0 else 10**9)"
}

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
if [[ $SETUP_OK == 1 ]]; then
    # ---- probe: does the device answer and run a step? ----
    stage probe 120 450 -- "$BIN" bench train --device "$DEVICE" --arch koch35 \
        --batch-pairs 4 --steps 1 --json

    # ---- data: Omniglot, then the MNIST test set (fetched by a tiny MNIST eval) ----
    stage data 120 450 -- "$BIN" data "${DATA_FLAGS[@]}" --json
    stage data-mnist 60 450 -- "$BIN" eval --mnist "$MNIST" --mnist-mirror "$MNIST_MIRROR" \
        --method pixel-nn --trials 10 --json

    # ---- rate: episodes per second of the default preset on this device ----
    # (its own short cosine: only the speed matters here). First one process alone,
    # then PAR processes at once: a small network leaves the GPU mostly idle between
    # kernel launches, so runs side by side may cost little more than one.
    stage rate 150 400 -- "$BIN" train --device "$DEVICE" "${DATA_FLAGS[@]}" --runs "$RUNS" \
        --name rate --max-steps "$RATE_STEPS" --no-time-limit "${STEP_FLAGS[@]}" --json
    read -r RATE VAL_S < <(rate_of "$RUNS/rate")
    say "rate: $RATE episodes/s alone, ${VAL_S}s per validation"
    PAR=4
    pids=()
    for i in $(seq 1 $PAR); do
        stage "rate-par$i" 150 330 -- "$BIN" train --device "$DEVICE" "${DATA_FLAGS[@]}" \
            --runs "$RUNS" --name "rate-par$i" --max-steps "$RATE_STEPS" --no-time-limit \
            "${STEP_FLAGS[@]}" --json &
        pids+=($!)
    done
    wait "${pids[@]}"
    # The slowest of the PAR runs: each one's rate while all PAR share the device.
    RATE_PAR=$RATE_STEPS VAL_PAR=0
    for i in $(seq 1 $PAR); do
        read -r r v < <(rate_of "$RUNS/rate-par$i")
        RATE_PAR="$("$PYTHON" -c "print(min($RATE_PAR, ${r:-0}))")"
        VAL_PAR="$("$PYTHON" -c "print(max($VAL_PAR, ${v:-1}))")"
    done
    say "rate: $RATE_PAR episodes/s each with $PAR runs side by side, ${VAL_PAR}s per validation"

    # ---- train: the runs that fit, in this order of worth ----
    # NAME:PRESET:SEED. The long preset first (never run to its end on 2 CPU cores),
    # then the default preset, then more seeds of it. Side by side when the shared
    # rate lets the long preset and the three seeds all finish, else the default's
    # three seeds side by side, else one after another as the rate alone allows.
    # 85 s stay for the evaluations and the packing.
    SPECS=(long:long:0 default:default:0 default-s1:default:1 default-s2:default:2)
    left=$(($(remaining) - 85))
    need_long_par=$(need_s "${PRESET_STEPS[long]}" "$RATE_PAR" "$VAL_PAR")
    need_default_par=$(need_s "${PRESET_STEPS[default]}" "$RATE_PAR" "$VAL_PAR")
    need_long=$(need_s "${PRESET_STEPS[long]}" "$RATE" "$VAL_S")
    TRAINED=()
    train_run() { # NAME PRESET SEED NEED MAX_S
        # An explicit count: the default preset would otherwise fit its episodes to
        # 30 minutes of this device, which the plan above has not budgeted.
        local name=$1 preset=$2 seed=$3 need=$4 max=$5
        local step_flag=(--max-steps $((PRESET_STEPS[$preset] / PRESET_MEMBERS[$preset])))
        stage "train-$name" "$max" 85 \
            "{\"preset\": \"$preset\", \"seed\": $seed, \"need_s\": $need, \"rate\": $RATE, \"rate_side_by_side\": $RATE_PAR}" -- \
            "$BIN" train --preset "$preset" --seed "$seed" --device "$DEVICE" "${DATA_FLAGS[@]}" \
            --runs "$RUNS" --name "$name" --no-time-limit "${step_flag[@]}" "${STEP_FLAGS[@]}" --json
    }
    side_by_side=()
    if ((need_long_par <= left)); then
        side_by_side=("${SPECS[@]}")
    elif ((need_long > left && need_default_par <= left)); then
        side_by_side=("${SPECS[@]:1}")
    fi
    if ((${#side_by_side[@]})); then
        say "train: ${#side_by_side[@]} runs side by side (long needs ~${need_long_par}s, default ~${need_default_par}s at $RATE_PAR/s; ${left}s left)"
        pids=()
        for spec in "${side_by_side[@]}"; do
            IFS=: read -r name preset seed <<<"$spec"
            need=$(need_s "${PRESET_STEPS[$preset]}" "$RATE_PAR" "$VAL_PAR")
            train_run "$name" "$preset" "$seed" "$need" "$left" &
            pids+=($!)
            TRAINED+=("$name")
        done
        wait "${pids[@]}"
    else
        for spec in "${SPECS[@]}"; do
            IFS=: read -r name preset seed <<<"$spec"
            need=$(need_s "${PRESET_STEPS[$preset]}" "$RATE" "$VAL_S")
            left=$(($(remaining) - 85))
            if ((need > left)); then
                say "train-$name: skipped (needs ~${need}s at $RATE/s, ${left}s left)"
                emit "train-$name" skipped 0 "" "{\"preset\": \"$preset\", \"seed\": $seed, \"need_s\": $need, \"rate\": $RATE}"
                continue
            fi
            train_run "$name" "$preset" "$seed" "$need" $((need * 2))
            TRAINED+=("$name")
        done
    fi
    if ((${#TRAINED[@]} == 0)); then
        # Nothing fits: the default preset fitted to the minutes left.
        left=$(($(remaining) - 85))
        if ((left > 120)); then
            minutes="$("$PYTHON" -c "print(round(($left - 45) / 60, 2))")"
            say "train-default: cut to $minutes minutes"
            stage train-default "$left" 85 "{\"preset\": \"default\", \"max_minutes\": $minutes, \"rate\": $RATE}" -- \
                "$BIN" train --preset default --device "$DEVICE" "${DATA_FLAGS[@]}" \
                --runs "$RUNS" --name default --max-minutes "$minutes" "${STEP_FLAGS[@]}" --json
            TRAINED+=(default)
        fi
    fi
    # Each trained run's best checkpoint on Lake's runs (side by side: each is short).
    pids=()
    for name in "${TRAINED[@]}"; do
        stage "eval-$name-lake" 40 45 -- "$BIN" eval --model "$RUNS/$name" --device "$DEVICE" \
            "${DATA_FLAGS[@]}" --lake-runs "${EVAL_FLAGS[@]}" --json &
        pids+=($!)
    done
    ((${#pids[@]})) && wait "${pids[@]}"

    # ---- the first run on Koch's split and MNIST; every run packed ----
    if ((${#TRAINED[@]})); then
        first="$RUNS/${TRAINED[0]}"
        stage "eval-${TRAINED[0]}-koch" 40 40 -- "$BIN" eval --model "$first" --device "$DEVICE" \
            "${DATA_FLAGS[@]}" --way 20 "${EVAL_FLAGS[@]}" --json
        stage "eval-${TRAINED[0]}-mnist" 40 30 -- "$BIN" eval --model "$first" --device "$DEVICE" \
            --mnist "$MNIST" --mnist-mirror "$MNIST_MIRROR" "${EVAL_FLAGS[@]}" --json
        # (best/'s optimizer state stays behind: last/ has the one to resume from)
        tar -C "$RUNS" --exclude=best/optimizer.safetensors -cf "$OUT/runs.tar" "${TRAINED[@]}" &&
            say "packed ${TRAINED[*]} into runs.tar"
    fi

    # ---- bench: Koch's network, ours, if time is left ----
    stage bench-128-f32 45 60 "{\"batch_pairs\": 128, \"tf32\": false}" -- \
        "$BIN" bench train --device "$DEVICE" "${BENCH_SHAPE[@]}" --steps "$BENCH_STEPS" --json
    stage bench-128-tf32 45 50 "{\"batch_pairs\": 128, \"tf32\": true}" -- \
        "$BIN" --tf32 bench train --device "$DEVICE" "${BENCH_SHAPE[@]}" --steps "$BENCH_STEPS" --json
fi

# ---- torch: the PyTorch reference of Koch's network on the same device ----
stage torch-128-f32 45 25 "{\"batch_pairs\": 128, \"tf32\": false}" -- \
    "$PYTHON" "$BUNDLE/torch_koch.py" --device "$DEVICE" --batch-pairs 128 --steps "$BENCH_STEPS"
if [[ $DEVICE == cuda ]]; then
    stage torch-128-tf32 45 0 "{\"batch_pairs\": 128, \"tf32\": true}" -- \
        "$PYTHON" "$BUNDLE/torch_koch.py" --device cuda --tf32 --batch-pairs 128 --steps "$BENCH_STEPS"
fi

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
    for k in ("missing_libraries", "version", "preset", "rate", "need_s", "max_minutes", "tf32"):
        if k in r:
            parts.append(f"{k}={r[k]}")
    print(f"{r['stage']:<18} {r['status']:<8} {r['seconds']:>5.0f}  {' '.join(parts)}")
PY
cat "$OUT/summary.txt"
say "done in $((SECONDS - START_S))s; results in $OUT"

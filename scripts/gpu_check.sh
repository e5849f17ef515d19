#!/usr/bin/env bash
# GPU check of the compact eval path, about 10 minutes on one GPU:
#   1. the correctness tests that run on CUDA (CUDA graphs == eager compaction == masked reference), and
#   2. `pact-zoo benchmark --device cuda` (CUDA events) for pact_resnet50 (224 px, against timm's resnet50 with the
#      same weights): eager, bucketed sub-batches, bucketed + one CUDA graph per (unit, bucket), and compiled
#      (compiled units with eager halting against the plain network compiled whole);
#   3. eager and CUDA graphs for the other families: the CIFAR ResNet, MobileNetV2, the ViT, ACM-ViT, the
#      Hugging Face encoder and the PACT-LSTM.
# Every benchmark checks adaptive == masked outputs and depths on the device. Results: out/gpu_check/*.json + *.log,
# gathered into one out/gpu_check/gpu_check.json (benchmark name -> its JSON, plus the device and the failures).
#
#   bash scripts/gpu_check.sh                       # from the repository root
#   ENCODER_KWARGS='{"num_hidden_layers": 6}' bash scripts/gpu_check.sh
set -euo pipefail

OUT=${OUT_DIR:-out/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-$PWD}"
PY=${PYTHON:-python}

if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available (torch $($PY -c 'import torch; print(torch.__version__)'))" >&2
    exit 1
fi
$PY -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"

run() {  # name, timeout in seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        tail -n 25 "$OUT/$name.log"
    else
        echo "gpu_check: $name FAILED (exit $?), see $OUT/$name.log" >&2
        tail -n 40 "$OUT/$name.log" >&2
        FAILED="$FAILED $name"
    fi
}
FAILED=""

# 1. correctness on CUDA (the CUDA-only tests skip on a CPU machine)
run tests 120 $PY -m pytest -q -p no:cacheprovider tests/test_eval_speed.py \
    "tests/test_compaction.py::test_conv_stage_compact_equals_per_sample_and_masked"

# 2. pact_resnet50 at 224 px vs timm resnet50 (same weights)
R50=(--model pact_resnet50 --plain-model resnet50 --model-kwargs '{"zero_init_last": false}' --input-size 3,224,224
     --synthetic-halting 0 --synthetic-samples 32 --target-flops-ratio 0.5 --calibration-samples 64
     --batch-sizes 1,8,64,128 --min-samples 64 --warmup 2 --repeats 5 --device cuda)
run resnet50_eager 150 $PY -m pact_zoo.bench "${R50[@]}" --modes adaptive,full,masked,plain \
    --memory-batch-size 64 --train-batch-size 64 --train-repeats 3 --output "$OUT/resnet50_eager.json"
run resnet50_buckets 60 $PY -m pact_zoo.bench "${R50[@]}" --modes adaptive,full --buckets default \
    --no-memory --no-training --output "$OUT/resnet50_buckets.json"
run resnet50_graphs 90 $PY -m pact_zoo.bench "${R50[@]}" --modes adaptive,full --buckets default --cuda-graphs \
    --no-memory --no-training --output "$OUT/resnet50_graphs.json"
run resnet50_compiled 240 $PY -m pact_zoo.bench "${R50[@]}" --modes adaptive,plain,compiled,compiled_plain \
    --no-memory --no-training --output "$OUT/resnet50_compiled.json"

# the CIFAR ResNet, MobileNetV2 and ACM-ViT (synthetic heads / calibrated gates on generated images)
R110=(--model pact_resnet110 --synthetic-halting 0 --target-flops-ratio 0.5 --batch-sizes 1,8,64,256 --min-samples 64
      --warmup 2 --repeats 5 --device cuda --no-memory --no-training)
run resnet110_eager 90 $PY -m pact_zoo.bench "${R110[@]}" --modes adaptive,full,masked,plain \
    --output "$OUT/resnet110_eager.json"
run resnet110_graphs 90 $PY -m pact_zoo.bench "${R110[@]}" --modes adaptive,full --buckets default --cuda-graphs \
    --output "$OUT/resnet110_graphs.json"
run mobilenetv2_eager 90 $PY -m pact_zoo.bench --model pact_mobilenetv2_100 --synthetic-halting 0 \
    --synthetic-samples 32 --target-flops-ratio 0.5 --calibration-samples 64 --batch-sizes 1,8,64 --min-samples 64 \
    --warmup 2 --repeats 5 --device cuda --no-memory --no-training --output "$OUT/mobilenetv2_eager.json"
run acm_vit_eager 90 $PY -m pact_zoo.bench --model acm_vit_tiny_patch16_224 --target-flops-ratio 0.75 \
    --calibration-samples 64 --batch-sizes 1,8,64 --min-samples 64 --warmup 2 --repeats 5 --device cuda \
    --no-memory --no-training --modes adaptive,full --output "$OUT/acm_vit_eager.json"

# 3. families that land in parallel (skipped where not registered)
if $PY -c "import sys, pact_zoo.hf as hf; sys.exit(0 if hasattr(hf, 'PactEncoderForSequenceClassification') else 1)"; then
    ENC=(--model hf:PactEncoderForSequenceClassification --model-kwargs "${ENCODER_KWARGS:-{\}}" --inputs tokens
         --seq-len 64 --threshold "${ENCODER_THRESHOLD:-0.5}" --batch-sizes 8,64 --min-samples 64 --warmup 2
         --repeats 5 --device cuda --no-memory --no-training)
    run encoder_eager 60 $PY -m pact_zoo.bench "${ENC[@]}" --output "$OUT/encoder_eager.json"
    run encoder_graphs 60 $PY -m pact_zoo.bench "${ENC[@]}" --modes adaptive,full --buckets default \
        --cuda-graphs --output "$OUT/encoder_graphs.json"
else
    echo "== encoder: PactEncoderForSequenceClassification not in pact_zoo.hf, skipped"
fi
if $PY -c "import sys, timm, pact_zoo; sys.exit(0 if 'pact_vit_small_patch16_224' in timm.list_models('pact_vit*') else 1)"; then
    run vit_eager 90 $PY -m pact_zoo.bench --model pact_vit_small_patch16_224 --synthetic-halting 0 \
        --synthetic-samples 32 --target-flops-ratio 0.5 --calibration-samples 64 --batch-sizes 8,64 \
        --min-samples 64 --warmup 2 --repeats 5 --device cuda --no-memory --no-training \
        --output "$OUT/vit_eager.json"
else
    echo "== vit: pact_vit_small_patch16_224 not registered, skipped"
fi

LSTM='{"vocab_size": 1000, "hidden_size": 256, "num_labels": 2, "max_ponder_steps": 4}'
run lstm_eager 60 $PY -m pact_zoo.bench --model hf:PactLSTMForSequenceClassification --model-kwargs "$LSTM" \
    --inputs tokens --seq-len 64 --threshold 0.5 --batch-sizes 8,64 --min-samples 64 --warmup 2 --repeats 5 \
    --device cuda --no-memory --no-training --output "$OUT/lstm_eager.json"

# one JSON: every benchmark's result under its name, the device, and what failed
$PY - "$OUT" "$FAILED" <<'PYEOF'
import json, sys
from pathlib import Path

import torch

from pact_zoo.fileio import atomic_write_json

out, failed = Path(sys.argv[1]), sys.argv[2].split()
results = {path.stem: json.loads(path.read_text()) for path in sorted(out.glob("*.json")) if path.stem != "gpu_check"}
atomic_write_json(out / "gpu_check.json", {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                            "failed": failed, "benchmarks": results})
print(f"gpu_check: {len(results)} benchmark results in {out / 'gpu_check.json'}")
PYEOF

if [ -n "$FAILED" ]; then
    echo "gpu_check: failed:$FAILED" >&2
    exit 1
fi
echo "gpu_check: all passed; JSON and logs in $OUT"

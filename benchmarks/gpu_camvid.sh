#!/usr/bin/env bash
# Issue 17 item 5 on a lent GPU (JAX, no TensorFlow): the SegNet paper's recipe (budget `full`:
# 360x480, batch 12, SGD 0.1, median-frequency weights, mixed_bfloat16) for each decoder in
# $DECODERS, run side by side on the one GPU, on the CamVid that benchmarks/gpu_kit.py packed.
# Device tool: carry [".whl", "gpu_kit"], command `bash benchmarks/gpu_camvid.sh`, timeout 600.
# Arguments are passed on to the script (e.g. --set train.val_every=10).
# Back in $OUT: per decoder the table (.md), the log, log.csv and the best checkpoint.
# Exit status: 0 when every run finished; else the first failed run's (124: it ran past SECONDS_EACH).
set -uo pipefail
out="${OUT:-runs/gpu_camvid}"
mkdir -p "$out"
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
python3 -c 'import keras, albumentations' 2>/dev/null ||  # the machine's image has neither
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
decoders=(${DECODERS:-unpool transposed})
pids=()
# JAX takes 75 % of the GPU's memory by default; leave room for each run.
export XLA_PYTHON_CLIENT_MEM_FRACTION="$(python3 -c "print(round(0.9 / ${#decoders[@]}, 2))")"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
for decoder in "${decoders[@]}"; do
  timeout "${SECONDS_EACH:-560}" python3 benchmarks/reproduce_segnet_camvid.py --root gpu_kit/camvid --budget full \
    --decoders "$decoder" --work-dir /tmp/gpu_camvid --out "$out/$decoder.md" \
    --set "train.epochs=${EPOCHS:-150}" --set data.cache=true "$@" >"$out/$decoder.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!decoders[@]}"; do
  decoder="${decoders[$i]}"
  wait "${pids[$i]}"
  code=$?
  run="/tmp/gpu_camvid/$decoder"
  cp "$run/log.csv" "$out/${decoder}_log.csv" 2>/dev/null
  cp "$run/checkpoints/best.keras" "$out/${decoder}_best.keras" 2>/dev/null
  tail -n 3 "$out/$decoder.log"
  if [ "$code" -ne 0 ]; then
    echo "gpu_camvid.sh: the $decoder run failed (exit $code; 124: past SECONDS_EACH=${SECONDS_EACH:-560} s)" >&2
    [ "$status" -eq 0 ] && status=$code
  fi
done
ls -la "$out"
exit "$status"

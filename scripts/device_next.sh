#!/bin/bash
# A device call for what stop 18 left: the FP8 loss curves alone, the MFU sweep with the loss compiled in, and the
# voice model's speed with its front end on the GPU. The MFU sweep adds batch 32 (stop 18: 19.3 % at 8, 25.5 % at 16).
#   bash scripts/device_next.sh COMMIT
# Needs, carried: .whl/ (wheels for python 3.12 of diffusers, torchao and importlib_metadata: the device image lacks
# them); hide the large weights except the voice default first (scripts/gpu_upload.sh hide FILE...).
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 INCASA_COMMIT=$1
mkdir -p /tmp/logs
timeout 250 python3 benchmarks/train_fp8.py --no-speed --arms bf16,tensorwise --curve-steps 120 --name train_fp8_curves \
  > /tmp/logs/fp8_curves.log 2>&1; echo "curves rc=$? at $((SECONDS-T0)) s"; tail -4 /tmp/logs/fp8_curves.log
cp benchmarks/results/train_fp8_curves.json benchmarks/results/train_fp8_curves.png $OUT/ 2>/dev/null
timeout $((540 - (SECONDS-T0))) python3 benchmarks/text_gpu.py --presets base --batch 16,32 --dispatches grouped --compile \
  --only-compiled --compile-loss --profile --name text_gpu_mfu2 > /tmp/logs/text_gpu.log 2>&1
echo "text_gpu rc=$? at $((SECONDS-T0)) s"; grep -v Warn /tmp/logs/text_gpu.log | tail -4
cp benchmarks/results/text_gpu_mfu2.json benchmarks/results/text_gpu_mfu2_profile.txt $OUT/ 2>/dev/null
timeout $((590 - (SECONDS-T0))) python3 benchmarks/tts_speed.py --device cuda > /tmp/logs/tts.log 2>&1
echo "tts rc=$?"; tail -3 /tmp/logs/tts.log; cp benchmarks/results/tts_speed_gpu.json $OUT/ 2>/dev/null
tar -C /tmp/logs -cJf $OUT/logs.tar.xz .

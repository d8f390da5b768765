#!/bin/bash
# The next device call (prepared in stop 22, whose lease ended before it ran): the MoE MFU at 16 and 32 sequences
# after the RoPE table (issue 10; stop 22 measured 27.2 % / 28.6 % before it), then the FP8 training step and the loss
# curves with cuDNN attention (issue 9; stop 22: 1.22x with cuDNN, curves only with flash).
#   bash scripts/device_next.sh COMMIT
# Needs, carried: .whl/ (wheels for python 3.12 of diffusers, torchao and importlib_metadata: the device image lacks
# them); hide the large weights first (scripts/gpu_upload.sh hide FILE...): the upload limit is 64 MiB.
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 INCASA_COMMIT=$1
mkdir -p /tmp/logs
timeout ${MFU_S:-300} python3 benchmarks/text_gpu.py --presets base --batch ${MFU_BATCH:-16,32} --dispatches grouped \
  --modes loss --profile --decode-tokens 0 --name text_gpu_mfu3 > /tmp/logs/text_gpu.log 2>&1
echo "text_gpu rc=$? at $((SECONDS-T0)) s"; grep -v Warn /tmp/logs/text_gpu.log | grep "MFU\|Error" | tail -6
cp benchmarks/results/text_gpu_mfu3.json benchmarks/results/text_gpu_mfu3_profile.txt $OUT/ 2>/dev/null
timeout $((585 - (SECONDS-T0))) python3 benchmarks/train_fp8.py --arms bf16,tensorwise --sdpa cudnn --profile \
  --curve-steps 150 --name train_fp8_cudnn > /tmp/logs/fp8.log 2>&1
echo "fp8 rc=$? at $((SECONDS-T0)) s"; grep -a "ms\|x \|Error\|error" /tmp/logs/fp8.log | grep -v Warn | tail -12
cp benchmarks/results/train_fp8_cudnn* $OUT/ 2>/dev/null
tar -C /tmp/logs -cJf $OUT/logs.tar.xz .; ls $OUT

#!/bin/bash
# One device call (stop 18, 2026-11-25): the 8b arm of benchmarks/image_8b.py compiled (issue 9) while the text
# default retrains with the proportional rule and MoE vs dense runs (issue 10). The text jobs are SIGSTOPped while
# the 8b arm times its runs: the 8b arm is turn 0 of a 2-way gate, this script is turn 1 and says "ready" only once
# the text jobs are stopped.
#   bash scripts/device_8b_beside_text.sh COMMIT
# Needs, carried: .whl/ (wheels for python 3.12 of diffusers, torchao and importlib_metadata) and .textkit/
# (text.tar.xz: data/text from `python -m incasa.text.data`; text_bench.tar.xz: data/text_bench); hide the large
# weights first (scripts/gpu_upload.sh hide FILE...): the upload limit is 64 MiB.
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 INCASA_COMMIT=$1
mkdir -p /tmp/data /tmp/logs /tmp/textrun && tar -C /tmp/data -xJf .textkit/text.tar.xz && mkdir -p data && tar -C data -xJf .textkit/text_bench.tar.xz || exit 1
rm -rf /tmp/gate; mkdir -p /tmp/gate
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout ${T8B:-555} python3 benchmarks/image_8b.py --arms incasa --repeats 2 --gate /tmp/gate --of 2 --turn 0 \
  --gate-timeout 540 --name image_8b_incasa > /tmp/logs/i8_incasa.log 2>&1 &
PI=$!
python3 -c "
from incasa.text.train import TrainConfig, train
train(TrainConfig(data='/tmp/data/text', out='/tmp/textrun', preset='small', seq_len=256, batch_size=64,
                  steps=5000, lr=2e-3, warmup=200, eval_every=500, ckpt_every=500, compile=True, max_minutes=${TEXT_MIN:-7},
                  bias_update_rule='proportional', bias_update_rate=1e-2, balance_loss_weight=3e-3))
" > /tmp/logs/text_train.log 2>&1 &
PT=$!
(python3 benchmarks/text_moe_vs_dense.py --data data/text_bench --preset small --steps 800 --seq-len 256 --batch-size 32 \
  --bias-update-rule proportional --balance-loss-weight 3e-3 --name text_moe_vs_dense_gpu_proportional > /tmp/logs/mvd.log 2>&1; echo "mvd rc=$? at $((SECONDS-T0)) s") &
PM=$!
while [ ! -e /tmp/gate/ready.0 ] && [ ! -e /tmp/gate/done.0 ] && kill -0 $PI 2>/dev/null; do sleep 0.5; done
echo "8b warm at $((SECONDS-T0)) s"
for p in $PT $PM; do pkill -STOP -P $p; kill -STOP $p; done 2>/dev/null; sleep 3; touch /tmp/gate/ready.1
wait $PI; echo "8b rc=$? at $((SECONDS-T0)) s"; touch /tmp/gate/done.1
for p in $PT $PM; do kill -CONT $p; pkill -CONT -P $p; done 2>/dev/null
cp benchmarks/results/image_8b_incasa.json $OUT/ 2>/dev/null; grep -v Warn /tmp/logs/i8_incasa.log | tail -4
wait $PT; echo "text rc=$? at $((SECONDS-T0)) s"; wait $PM
grep -a "val loss\|stopping\|Error" /tmp/logs/text_train.log | tail -6
(cd /tmp/textrun && split -b 15M model.safetensors $OUT/text_model.part && cp /tmp/logs/text_train.log . && \
  tar -cJf $OUT/text_misc.tar.xz metrics.jsonl curve.png text_train.log)
cp benchmarks/results/text_moe_vs_dense_gpu_proportional.json $OUT/ 2>/dev/null
tar -C /tmp/logs -cJf $OUT/logs2.tar.xz .; ls $OUT

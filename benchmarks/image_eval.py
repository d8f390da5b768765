"""Evaluate image checkpoints with `incasa.image.eval` and keep one result file per checkpoint.

    python benchmarks/image_eval.py                                   # the shipped default
    python benchmarks/image_eval.py -c runs/a/model.safetensors -c runs/b/model.safetensors --num-prompts 30

Each checkpoint gets benchmarks/results/image_eval_<model hash>.json (device, date, commit, every number and every
prompt's row) and a one-page report image_eval_<model hash>.png. The reports draw curves across all the checkpoints
that have a result file here (by training step), so memorisation and fidelity can be followed along a run.
The Fréchet distance in these files is computed on our emoji classifier's features: it is NOT Inception-FID.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--checkpoint", action="append", default=None, help="model.safetensors (repeatable)")
    ap.add_argument("--data", default="data/emoji64")
    ap.add_argument("--num-prompts", type=int, default=30)
    ap.add_argument("--variants", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from incasa.eval_cli import print_summary
    from incasa.image.eval import EvalConfig, TrainingMemory, evaluate_checkpoint, load_real_data
    from incasa.image.generate import DEFAULT_CHECKPOINT

    torch.set_num_threads(args.threads)
    cfg = EvalConfig(data=args.data, num_prompts=args.num_prompts, variants=args.variants, steps=args.steps)
    real = load_real_data(Path(args.data))
    memory = TrainingMemory(real.train_images, [f"{m['style']}_{m['hexcode']}" for m in real.train_metas])
    history = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("image_eval_*.json"))]
    for ck in args.checkpoint or [None]:
        path = Path(ck) if ck else DEFAULT_CHECKPOINT
        model_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        history = [h for h in history if h.get("model_hash") != model_hash]
        t0 = time.perf_counter()
        result = evaluate_checkpoint(ck, cfg, report=RESULTS / f"image_eval_{model_hash}.png", history=history,
                                     real=real, memory=memory)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        print_summary(result)
        out = write_result(f"image_eval_{model_hash}", result)
        history.append(json.loads(out.read_text()))
        print(f"wrote {out} and {RESULTS / f'image_eval_{model_hash}.png'} in {result['wall_s']} s")


if __name__ == "__main__":
    main()

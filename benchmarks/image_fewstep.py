"""Goal (issue 9): a few-step sampler by distillation. The reflow student (incasa/image/distill.py) at 4, 2 and 1
steps without guidance against its teacher at 25 steps with guidance 4 (and the teacher cut to 4 guided steps, the
cheap thing one would try without distillation), on the same prompts and seeds.

For each setting: network evaluations per picture, the seconds for five 64x64 variants on this machine (model loaded,
sampling only, median of --repeats), the mean squared pixel difference to the teacher's 25-step pictures from the
same noise (prompts: the teacher's sample prompts), and `incasa eval image` (prompt fidelity judged by the emoji
classifier, Fréchet distance on its features — NOT Inception-FID —, memorisation, diversity) on one small seeded
suite. Writes benchmarks/results/<name>.json and a side-by-side grid <name>_grid.png (--name, default image_fewstep).

    python benchmarks/image_fewstep.py --student runs/reflow/model.safetensors [--num-prompts 8 --variants 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_result  # noqa: E402


def settings(student: str, teacher: str | None) -> list[dict]:
    return [{"name": "teacher 25 steps, CFG 4", "checkpoint": teacher, "steps": 25, "guidance": 4.0, "nfe": 50},
            {"name": "teacher 4 steps, CFG 4", "checkpoint": teacher, "steps": 4, "guidance": 4.0, "nfe": 8},
            *({"name": f"student {k} step{'s' if k > 1 else ''}, no CFG", "checkpoint": student, "steps": k,
               "guidance": 1.0, "nfe": k} for k in (4, 2, 1))]


def grid(rows: list[list], labels: list[str], path: Path, scale: int = 2) -> None:
    """One row per setting (label on the left), one column per prompt, written atomically."""
    from PIL import Image, ImageDraw

    w, h = rows[0][0].size
    W, H, margin = w * scale, h * scale, 190
    canvas = Image.new("RGB", (margin + W * len(rows[0]), H * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(rows, labels)):
        draw.text((6, r * H + H // 2 - 6), label, fill="black")
        for c, img in enumerate(row):
            canvas.paste(img.resize((W, H), Image.NEAREST), (margin + c * W, r * H))
    tmp = path.with_suffix(".tmp.png")
    canvas.save(tmp)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="model.safetensors from `incasa train distill`")
    ap.add_argument("--teacher", default=None, help="default: the shipped image model")
    ap.add_argument("--data", default="data/emoji64")
    ap.add_argument("--num-prompts", type=int, default=8, help="per fidelity family (eval suite)")
    ap.add_argument("--variants", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="image_fewstep", help="result file stem under benchmarks/results/")
    ap.add_argument("--skip-eval", action="store_true", help="timings, grid and pixel agreement only")
    args = ap.parse_args()

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from incasa.image.eval import EvalConfig, TrainingMemory, evaluate_checkpoint, load_real_data
    from incasa.image.generate import generate_images, load_pipeline

    torch.set_num_threads(args.threads)
    runs = settings(args.student, args.teacher)
    pipes = {ck: load_pipeline(ck) for ck in {args.student, args.teacher}}
    prompts = pipes[args.teacher].meta.get("sample_prompts") or ["a red apple, noto style", "a cat face, twemoji style"]
    prompts = prompts[:6]
    pictures = {}
    for s in runs:
        pipe = pipes[s["checkpoint"]]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            generate_images(prompts[0], n=5, seed=7, steps=s["steps"], guidance=s["guidance"], pipeline=pipe)
            times.append(time.perf_counter() - t0)
        s["seconds_5_variants"] = round(statistics.median(times), 3)
        pictures[s["name"]] = [generate_images(p, n=1, seed=11, steps=s["steps"], guidance=s["guidance"],
                                               pipeline=pipe)[0] for p in prompts]
    ref = [np.asarray(im, dtype=np.float32) / 127.5 - 1 for im in pictures[runs[0]["name"]]]
    for s in runs:
        mine = [np.asarray(im, dtype=np.float32) / 127.5 - 1 for im in pictures[s["name"]]]
        s["mse_to_teacher_25"] = round(float(np.mean([np.mean((a - b) ** 2) for a, b in zip(mine, ref)])), 5)
    RESULTS.mkdir(parents=True, exist_ok=True)
    grid([pictures[s["name"]] for s in runs], [s["name"] for s in runs], RESULTS / f"{args.name}_grid.png")

    if not args.skip_eval:
        real = load_real_data(Path(args.data))
        memory = TrainingMemory(real.train_images, [f"{m['style']}_{m['hexcode']}" for m in real.train_metas])
        for s in runs:
            cfg = EvalConfig(data=args.data, num_prompts=args.num_prompts, variants=args.variants, steps=s["steps"],
                             guidance=s["guidance"])
            t0 = time.perf_counter()
            r = evaluate_checkpoint(s["checkpoint"], cfg, real=real, memory=memory)
            s["eval_seconds"] = round(time.perf_counter() - t0, 1)
            s["eval"] = {"top1": r["fidelity_overall"]["top1"], "top5": r["fidelity_overall"]["top5"],
                         "target_prob": r["fidelity_overall"].get("target_prob"),
                         "frechet": r["frechet"].get("generated"), "memorised": r["memorisation"].get("share"),
                         "diversity": r["diversity"]["within_prompt_mean"],
                         "collapsed": r["diversity"]["collapsed_share"], "num_images": r["num_images"],
                         "model_hash": r["model_hash"]}

    table = Table(title=f"few-step sampling: {Path(args.student)} vs its teacher (64x64, {args.threads} CPU thread)")
    cols = ["setting", "NFE", "s / 5 variants", "MSE to teacher-25"]
    if not args.skip_eval:
        cols += ["top-1", "top-5", "Fréchet (judge)", "memorised", "diversity"]
    for c in cols:
        table.add_column(c, justify="left" if c == "setting" else "right")

    def num(v, spec=".3f"):
        return "n/a" if v is None else format(v, spec)

    for s in runs:
        row = [s["name"], str(s["nfe"]), f"{s['seconds_5_variants']:.2f}", f"{s['mse_to_teacher_25']:.4f}"]
        if "eval" in s:
            e = s["eval"]
            row += [num(e["top1"]), num(e["top5"]), num(e["frechet"], ".1f"), num(e["memorised"]),
                    num(e["diversity"], ".4f")]
        table.add_row(*row)
    Console(width=160).print(table)
    student_meta = pipes[args.student].meta
    out = write_result(args.name, {
        "student": args.student, "teacher": args.teacher or "shipped default",
        "student_distill": student_meta.get("distill"), "student_val": student_meta.get("val"),
        "student_train_device": student_meta.get("train_device"),
        "eval_suite": None if args.skip_eval else {"num_prompts": args.num_prompts, "variants": args.variants,
                                                   "seed": 0, "data": args.data},
        "grid_prompts": prompts, "threads": args.threads, "settings": runs,
        "note": "Fréchet distance on the emoji judge's features, not Inception-FID; small suite, so fidelity "
                "numbers carry a few points of sampling noise"})
    print(f"wrote {out} and {RESULTS / f'{args.name}_grid.png'}")


if __name__ == "__main__":
    main()

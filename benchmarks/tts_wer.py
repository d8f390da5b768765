"""Intelligibility of the voice: pocketsphinx + jiwer WER on held-out sentences, as a ratio to the teachers' WER.

The held-out sentences are the last 100 texts of the corpus (never trained on). Each is spoken by our model with
speaker S and compared with the festival teacher's own audio of the same text by the same speaker S.
Goal: ratio <= 1.5. pocketsphinx runs at about half real time on one core, so the default scores --num 25
sentences per speaker; `--num 100` is the full held-out set (about 4x longer).

    python benchmarks/tts_wer.py --corpus runs/voice/corpus [--num 25] [--speakers slt,kal] [--checkpoint PATH]
                                 [--copy-synthesis]

--copy-synthesis adds a column: the teacher's audio re-synthesised by our vocoder from its own mel (the acoustic
model out of the loop), so a high ratio can be blamed on the vocoder or on the acoustic model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from incasa.voice.eval import intelligibility  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="the corpus the checkpoint was trained on (teacher audio)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--num", type=int, default=25)
    ap.add_argument("--speakers", default="")
    ap.add_argument("--copy-synthesis", action="store_true", help="also score teacher mel -> our vocoder")
    ap.add_argument("--name", default="tts_wer", help="result file benchmarks/results/NAME.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    speakers = [s for s in args.speakers.split(",") if s] or None
    with Progress() as p:
        results = intelligibility(args.checkpoint, args.corpus, speakers, args.num, progress=p,
                                  copy_synth=args.copy_synthesis)
    table = Table(title="Intelligibility (pocketsphinx WER on held-out sentences)")
    cols = ["speaker", "sentences", "model WER", "teacher WER", "ratio"]
    cols += ["vocoder-only WER", "vocoder ratio"] if args.copy_synthesis else []
    for col in cols:
        table.add_column(col, justify="right")
    for r in results:
        extra = [f"{r.vocoder_wer:.3f}", f"{r.vocoder_wer / max(r.teacher_wer, 1e-9):.2f}"] if args.copy_synthesis else []
        table.add_row(r.speaker, str(r.num_sentences), f"{r.model_wer:.3f}", f"{r.teacher_wer:.3f}", f"{r.ratio:.2f}",
                      *extra)
    Console().print(table)
    path = write_result(args.name, {"checkpoint": str(args.checkpoint or "shipped default"), "results": [
        {"speaker": r.speaker, "sentences": r.num_sentences, "model_wer": r.model_wer, "teacher_wer": r.teacher_wer,
         "ratio": r.ratio, "vocoder_only_wer": r.vocoder_wer} for r in results]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Command-line entry points of the text model: `incasa chat` and `incasa train text`.

Only typer and the standard library are imported at module level; torch and the model load inside the commands.
Expected failures (bad input, missing files) become one red line on stderr and exit code 2 -- never a traceback.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer


def fail(message: str, code: int = 2):
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def chat(
    prompt: Optional[str] = typer.Argument(None, help="Ask one question and exit. Without it: an interactive "
                                                      "session (type /reset to forget the history, /exit or "
                                                      "Ctrl-D to leave)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                              help="A model.safetensors from `incasa train text` (default: shipped)."),
    system: str = typer.Option("", "--system", help="A system message put before the conversation."),
    max_tokens: int = typer.Option(128, "--max-tokens", help="Most tokens per reply."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 = greedy; higher = more varied."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling: keep the smallest set of tokens with "
                                                      "this much probability (0-1]."),
    top_k: int = typer.Option(0, "--top-k", help="Keep only the K most likely tokens (0 = off)."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="Stop the reply at this string (repeatable)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed the sampler for a reproducible reply."),
    overflow: str = typer.Option("truncate", "--overflow", help="When the conversation outgrows the context: "
                                                                "truncate (drop the oldest turns) or error."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Chat with a text model in the terminal; replies stream as they are generated."""
    from incasa.text.chat import chat as chat_fn
    from incasa.text.chat import load_model

    try:
        tm = load_model(checkpoint, device=device)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(str(e))
    history = [{"role": "system", "content": system}] if system else []

    def reply(text: str, interactive: bool = False) -> None:
        history.append({"role": "user", "content": text})
        try:
            with warnings.catch_warnings():  # printed below as one yellow line, not as a Python warning
                warnings.simplefilter("ignore")
                stream = chat_fn(history, model=tm, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                 top_k=top_k, stop=stop, seed=seed, overflow=overflow)
        except ValueError as e:
            history.pop()
            if not interactive:
                fail(str(e))
            typer.secho(f"Error: {e}", fg=typer.colors.RED, err=True)  # the session goes on
            return
        for note in stream.warnings:
            typer.secho(f"Warning: {note}", fg=typer.colors.YELLOW, err=True)
        parts = []
        for delta in stream:
            parts.append(delta)
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(parts)})

    if prompt is not None:
        if not prompt.strip():
            fail("the prompt is empty; ask something, e.g. 'What does dog mean?'")
        reply(prompt)
        return
    typer.secho(f"incasa chat ({Path(tm.path).name}, {tm.meta.get('preset', '?')}); /reset, /exit", dim=True, err=True)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("", err=True)
            return
        line = line.strip()
        if not line:
            continue
        if line == "/exit":
            return
        if line == "/reset":
            del history[1 if system else 0:]
            continue
        reply(line, interactive=True)


def train_text(
    data: Path = typer.Option(..., "--data", help="Folder of .jsonl ({'text': ...} or {'messages': [...]} per "
                                                  "line) and .txt files, e.g. built by `python -m incasa.text.data`."),
    out: Path = typer.Option(..., "--out", help="Run folder; re-running with the same folder resumes."),
    preset: str = typer.Option("small", "--preset", help="Model size: tiny, small, base, large, or a '-dense' twin "
                                                         "(e.g. small-dense) with the same active parameters."),
    vocab_size: int = typer.Option(4096, "--vocab-size", help="Byte-level BPE vocabulary learned on the data."),
    seq_len: int = typer.Option(256, "--seq-len", help="Tokens per training window."),
    steps: int = typer.Option(2000, "--steps", help="Optimizer steps in total."),
    batch_size: int = typer.Option(16, "--batch-size", help="Windows per step."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup: int = typer.Option(100, "--warmup"),
    weight_decay: float = typer.Option(0.1, "--weight-decay"),
    ema_decay: float = typer.Option(0.99, "--ema-decay", help="EMA of the weights; the EMA is exported."),
    bias_update_rate: float = typer.Option(1e-2, "--bias-update-rate",
                                           help="Auxiliary-loss-free balancing: bias step per optimizer step "
                                                "(the largest step for proportional and adaptive)."),
    bias_update_rule: str = typer.Option("proportional", "--bias-update-rule",
                                         help="How the balance bias moves: proportional (step follows the load "
                                              "error; the default), sign (a fixed step, DeepSeek-V3) or adaptive "
                                              "(sign steps that grow while an expert stays off balance and halve "
                                              "when it crosses: fast catch-up, little dither)."),
    balance_loss_weight: Optional[float] = typer.Option(None, "--balance-loss-weight",
                                                        help="Sequence-level balance loss weight (default: preset)."),
    z_loss_weight: Optional[float] = typer.Option(None, "--z-loss-weight",
                                                  help="Router z-loss weight (default: preset)."),
    eval_every: int = typer.Option(250, "--eval-every", help="Validation loss and a probe answer every N steps."),
    ckpt_every: int = typer.Option(250, "--ckpt-every", help="Save the resumable state every N steps."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (bf16 autocast on CUDA)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (CUDA)."),
    max_minutes: float = typer.Option(0.0, "--max-minutes",
                                      help="Stop early after this much training time (0: none); the schedule still "
                                           "spans --steps, and the weights are saved as at the end."),
) -> None:
    """Train the mixture-of-experts language model from scratch (resumes if --out has a state)."""
    from incasa.text.train import TrainConfig, train

    if steps < 1 or batch_size < 1 or seq_len < 8:
        fail("--steps and --batch-size must be positive and --seq-len at least 8")
    if bias_update_rate < 0:
        fail("--bias-update-rate must be >= 0")
    if bias_update_rule not in ("sign", "proportional", "adaptive"):
        fail(f"--bias-update-rule must be sign, proportional or adaptive, got {bias_update_rule!r}")
    if max_minutes < 0:
        fail("--max-minutes must be >= 0")
    cfg = TrainConfig(data=str(data), out=str(out), preset=preset, vocab_size=vocab_size, seq_len=seq_len, steps=steps,
                      batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay, ema_decay=ema_decay,
                      bias_update_rate=bias_update_rate, bias_update_rule=bias_update_rule,
                      balance_loss_weight=balance_loss_weight,
                      z_loss_weight=z_loss_weight, eval_every=eval_every, ckpt_every=ckpt_every, seed=seed,
                      device=device, compile=compile, max_minutes=max_minutes)
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(str(e))
    typer.echo(f"trained to step {result['step']}: {out / 'model.safetensors'}")

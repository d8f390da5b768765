"""Command-line entry points for incasa.safety (registered in incasa/cli.py). Heavy imports stay inside commands.

    incasa safety check "a prompt"          score a prompt against the policy (exit 3 when blocked)
    incasa safety check-image out.png       the output-image hook on a file
    incasa safety train                     build the prompt set (seeds + fresh sets) and retrain the classifier
    incasa safety prompts FILE              write that prompt set as JSONL, to read or to train elsewhere
    incasa keys init                        create a local development signing chain
    incasa keys show                        where the keys are, their id and validity
    incasa provenance verify out.png        C2PA state and trust, model, actions; and the invisible watermark
    incasa provenance strip out.png         remove the C2PA manifest (logged to the audit log)

Locations are resolved here and only here: --keys-dir, else $INCASA_KEYS_DIR, else ~/.config/incasa/keys;
--audit-log, else $INCASA_AUDIT_LOG, else ~/.local/state/incasa/audit.jsonl.
"""

import json
import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)
keys_app = typer.Typer(no_args_is_help=True)
provenance_app = typer.Typer(no_args_is_help=True)

POLICY_EXIT_CODE = 3  # = incasa.safety.policy.POLICY_EXIT_CODE (kept literal so this module imports only typer)

KeysDir = typer.Option(
    None, "--keys-dir", help="Signing keys folder (default: $INCASA_KEYS_DIR or ~/.config/incasa/keys)."
)
AuditLog = typer.Option(
    None, "--audit-log", help="JSONL audit log (default: $INCASA_AUDIT_LOG or ~/.local/state/incasa/audit.jsonl)."
)
PolicyFile = typer.Option(None, "--policy", help="Policy file (TOML or JSON); the default policy when omitted.")


def resolve_keys_dir(keys_dir: Path | None) -> Path:
    if keys_dir is not None:
        return keys_dir
    if os.environ.get("INCASA_KEYS_DIR"):
        return Path(os.environ["INCASA_KEYS_DIR"])
    return Path.home() / ".config" / "incasa" / "keys"


def resolve_audit_log(audit_log: Path | None) -> Path:
    if audit_log is not None:
        return audit_log
    if os.environ.get("INCASA_AUDIT_LOG"):
        return Path(os.environ["INCASA_AUDIT_LOG"])
    return Path.home() / ".local" / "state" / "incasa" / "audit.jsonl"


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _read_image_file(path: Path) -> tuple[bytes, str]:
    from incasa.safety.provenance import MAX_BYTES, sniff_format

    if not path.is_file():
        _fail(f"{path} does not exist or is not a file")
    if path.stat().st_size > MAX_BYTES:
        _fail(f"{path} is larger than {MAX_BYTES // 2**20} MB")
    data = path.read_bytes()
    try:
        return data, sniff_format(data)
    except ValueError as e:
        _fail(f"{path}: {e}")


# --- incasa safety --------------------------------------------------------------------------------------------


@app.command(help="Check a prompt against the policy: prints the decision; exits 3 if blocked.")
def check(
    prompt: str = typer.Argument(..., help="The prompt to check."),
    policy: Path = PolicyFile,
    audit_log: Path = AuditLog,
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
) -> None:
    from incasa.safety.policy import audit, check_prompt, load_policy

    try:
        rules = load_policy(str(policy) if policy else None)
        decision = check_prompt(prompt, rules)
        audit(decision, prompt, resolve_audit_log(audit_log), keep_raw=rules.keep_raw, source="cli")
    except (ValueError, OSError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(decision.__dict__))
    else:
        category = f" [{decision.category}]" if decision.category else ""
        typer.echo(f"{decision.action}{category} score={decision.score:.2f}: {decision.reason}")
    if decision.action == "block":
        raise typer.Exit(POLICY_EXIT_CODE)


@app.command(
    "check-image",
    help="Run the output-image hook (the policy's image classifier) on an image file; exits 3 if blocked.",
)
def check_image_cmd(
    file: Path = typer.Argument(..., help="PNG, JPEG or WebP file."),
    policy: Path = PolicyFile,
) -> None:
    import io

    from PIL import Image

    from incasa.safety.policy import check_image, load_policy

    data, _ = _read_image_file(file)
    try:
        rules = load_policy(str(policy) if policy else None)
        with Image.open(io.BytesIO(data)) as img:
            decision = check_image(img, rules)
    except (ValueError, OSError) as e:
        _fail(f"{file}: {e}")
    category = f" [{decision.category}]" if decision.category else ""
    typer.echo(f"{decision.action}{category} score={decision.score:.2f}: {decision.reason}")
    if decision.action == "block":
        raise typer.Exit(POLICY_EXIT_CODE)


@app.command(
    help="Build the prompt set from the hand-written seeds, the fresh sets fresh..fresh22 (training data since "
         "round 11, their rows weighted by --fresh-weight; fresh23-fresh42, the names17 and names30 probes and the "
         "two short probes shortprobe25 and shortprobe26 stay held out) and other projects' docstrings (benign "
         "non-prompt text), and retrain the prompt classifier (~45 min on one core).",
)
def train(
    c: float = typer.Option(20.0, help="Inverse L2 regularisation of the logistic regression."),
    kind: str = typer.Option(
        None, help="blend (the default, shipped since the twenty-fourth round of data/README.md: the linear model "
        "plus a 32-unit hidden layer, their probabilities averaged; ~45 min on one core) or linear (the model "
        "alone, ~20 min)."
    ),
    out: Path = typer.Option(None, help="Where to write the classifier (default: the shipped file, replaced)."),
    names: bool = typer.Option(
        True, help="Read a listed public figure's name (data/public_figures.json) as one placeholder word, so that "
        "what is learned about one name holds for all (the fifteenth round; --no-names: names are ordinary words)."
    ),
    orgs: bool = typer.Option(
        False, help="Read a listed organisation's name (data/organisations.json: news media, institutions, parties) "
        "as one placeholder word too. Measured in the sixteenth round (data/README.md): 1.3 points less red-team "
        "blocked on two sealed sets, so off by default."
    ),
    fresh_weight: float = typer.Option(
        None, min=0.01, help="Weight of the fresh sets' rows (independent authors' prompts, one row each) against the "
        "seeds' five rows per core; default: the shipped classifier's (classifier.DEFAULT_FRESH_WEIGHT). Measured "
        "leaving one author out at a time in the eighteenth round (data/README.md)."
    ),
) -> None:
    from incasa.safety.classifier import DEFAULT_FRESH_WEIGHT, DEFAULT_KIND, DEFAULT_MODEL, train_on_prompt_set
    from incasa.safety.promptset import build_prompt_set

    kind = DEFAULT_KIND if kind is None else kind
    if kind not in ("linear", "blend"):
        raise typer.BadParameter(f"must be linear or blend, got {kind!r}", param_hint="--kind")
    fresh_weight = DEFAULT_FRESH_WEIGHT if fresh_weight is None else fresh_weight
    out = out or DEFAULT_MODEL
    if not out.parent.is_dir():
        raise typer.BadParameter(f"no folder {out.parent}", param_hint="--out")
    rows = build_prompt_set()
    typer.echo(f"built {len(rows)} prompts ({sum(r['split'] == 'train' for r in rows)} train)")
    model, cv = train_on_prompt_set(rows, out, c=c, kind=kind, name_token=names, org_token=orgs,
                                    fresh_weight=fresh_weight)
    typer.echo(f"classifier ({kind}): {len(model.vocabulary)} features, {len(model.classes)} classes -> {out}")
    typer.echo(
        f"grouped 5-fold CV on the train split: per-category thresholds "
        f"{min(cv['thresholds'].values()):.3f}..{max(cv['thresholds'].values()):.3f}, out-of-fold benign false "
        f"positives {cv['oof_false_positive_rate']:.1%}, red-team recall by the classifier alone {cv['oof_recall']:.1%}"
    )
    typer.echo("held-out numbers of the whole guardrail: python benchmarks/guardrails.py")


@app.command(
    help="Write the labelled prompt set the classifier trains on (built from the seeds and the fresh sets) as JSONL: "
         "one object per line with id, text, lang, label, tricky, core, frame, obfuscation and split (train/test).",
)
def prompts(
    out: Path = typer.Argument(..., help="The JSONL file to write (replaced atomically)."),
) -> None:
    from incasa.safety.promptset import build_prompt_set, write_prompt_set

    if not out.parent.is_dir():
        raise typer.BadParameter(f"no folder {out.parent}", param_hint="OUT")
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a folder; give a file name", param_hint="OUT")
    rows = build_prompt_set()
    try:
        write_prompt_set(rows, out)
    except OSError as e:
        _fail(f"cannot write {out}: {e}")
    typer.echo(f"wrote {len(rows)} prompts to {out} ({sum(r['split'] == 'test' for r in rows)} held-out test rows)")


# --- incasa keys ----------------------------------------------------------------------------------------------


@keys_app.command(
    help="Create a local development signing chain (EC P-256 CA + signer; C2PA verifiers report it as untrusted)."
)
def init(
    keys_dir: Path = KeysDir,
    force: bool = typer.Option(False, "--force", help="Replace existing keys."),
) -> None:
    from incasa.safety.provenance import create_dev_keys, key_id

    folder = resolve_keys_dir(keys_dir)
    try:
        create_dev_keys(folder, overwrite=force)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"created a development signing chain in {folder} (key id {key_id(folder)})")
    typer.echo(
        "it is not on any C2PA trust list: verification will say 'untrusted'. For production, put your "
        "CA-issued chain.pem (end entity first) and PKCS#8 signer.key.pem there instead."
    )


@keys_app.command(help="Show where the signing keys are, their id, subject and validity.")
def show(keys_dir: Path = KeysDir) -> None:
    from cryptography import x509

    from incasa.safety.provenance import CHAIN_FILE, key_id

    folder = resolve_keys_dir(keys_dir)
    try:
        identifier = key_id(folder)
    except ValueError as e:
        _fail(str(e))
    cert = x509.load_pem_x509_certificates((folder / CHAIN_FILE).read_bytes())[0]
    typer.echo(
        f"keys dir: {folder}\nkey id:   {identifier}\nsubject:  {cert.subject.rfc4514_string()}\n"
        f"issuer:   {cert.issuer.rfc4514_string()}\n"
        f"valid:    {cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}"
    )


# --- incasa provenance ----------------------------------------------------------------------------------------


@provenance_app.command(
    help="Verify an image's C2PA content credentials and look for the invisible watermark. "
    "Exits 1 unless the manifest is valid."
)
def verify(
    file: Path = typer.Argument(..., help="PNG, JPEG or WebP file."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
) -> None:
    import io

    from PIL import Image

    from incasa.safety import provenance, watermark

    data, fmt = _read_image_file(file)
    try:
        report = provenance.verify(data, fmt)
        with Image.open(io.BytesIO(data)) as img:
            found, payload, confidence = (
                watermark.detect(img) if min(img.size) >= watermark.TILE // 2 else (False, None, 0.0)
            )
    except (ValueError, OSError) as e:
        _fail(f"{file}: {e}")
    report["watermark"] = {
        "found": found,
        "payload": payload.hex() if payload else None,
        "confidence": round(confidence, 3),
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(
            f"C2PA:      {report['state']}" + (f" (signer {report['trust']})" if report["state"] != "absent" else "")
        )
        if report["state"] != "absent":
            typer.echo(f"model:     {report.get('model')} {report.get('model_version') or ''}".rstrip())
            typer.echo(
                f"actions:   {', '.join(a for a in report['actions'] if a)}  "
                f"source: {report.get('digital_source_type')}"
            )
            typer.echo(
                f"signer:    {report.get('signer', {}).get('common_name')} / {report.get('signer', {}).get('issuer')}"
            )
            if report.get("ingredients"):
                typer.echo(f"ingredients: {report['ingredients']}")
            if report["failures"]:
                typer.echo(f"failures:  {', '.join(report['failures'])}")
        typer.echo(
            f"watermark: {'found, payload ' + report['watermark']['payload'] if found else 'not found'} "
            f"(sync agreement {confidence:.2f})"
        )
    if report["state"] != "valid":
        raise typer.Exit(1)


@provenance_app.command(
    help="Remove the C2PA manifest from an image (pixels untouched; the watermark stays). The removal is logged."
)
def strip(
    file: Path = typer.Argument(..., help="PNG, JPEG or WebP file."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Where to write (default: <name>.stripped.<ext> next to the input)."
    ),
    audit_log: Path = AuditLog,
) -> None:
    import hashlib

    from incasa.safety import provenance
    from incasa.safety.policy import audit_event

    data, fmt = _read_image_file(file)
    target = output or file.with_name(f"{file.stem}.stripped{file.suffix}")
    try:
        before = provenance.verify(data, fmt)["state"]
        stripped = provenance.strip(data, fmt)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(stripped)
        os.replace(tmp, target)
        audit_event(
            resolve_audit_log(audit_log),
            {
                "event": "c2pa_strip",
                "source": "cli",
                "input": str(file),
                "output": str(target),
                "manifest_before": before,
                "input_sha256": hashlib.sha256(data).hexdigest(),
                "output_sha256": hashlib.sha256(stripped).hexdigest(),
            },
        )
    except (ValueError, OSError) as e:
        _fail(f"{file}: {e}")
    typer.echo(f"wrote {target} ({'manifest removed' if before != 'absent' else 'it had no manifest'}; logged)")

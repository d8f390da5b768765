"""Text corpora for the language model: built from Debian packages, or brought by the user as .txt / .jsonl.

No corpus can be downloaded from a hub here, so the shipped default learns from text that Debian packages carry
(fetched with `apt-get download` and unpacked with `dpkg -x` into a cache folder -- nothing is installed):

    source        package         licence (say it plainly)                     becomes
    wordnet       wordnet-base    WordNet 3.0 licence (Princeton, permissive)  "What does X mean?" -> gloss pairs
    gcide         dict-gcide      GPL-2.0-or-later (GCIDE, from Webster 1913)  "Define X." -> first sense pairs
    fortunes_en   fortunes-min,   unclear: the program is BSD; the quotation   plain text + "Tell me a fortune"
                  fortunes        files have no licence of their own
    fortunes_it   fortunes-it     "not copyrighted" per the package, a         plain text + "Dimmi una frase"
                                  collection of quotations of others' works
    python_docs   python3.11-doc  PSF License Agreement (Python docs)          plain text + "What does the
                                                                               Python function f do?" pairs

A built corpus is a folder of JSON-lines files, one per source, each line either {"text": ...} (a plain
document) or {"messages": [{"role", "content"}, ...]} (a conversation; only assistant turns are trained on),
plus sources.json with counts and licences. A user's folder is read the same way: every *.jsonl line as above and
every *.txt file as one plain document.

`python -m incasa.text.data OUT` builds the default corpus. Documents go to the validation split by a hash of
their content (1 %), so the split is stable across machines and runs.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

PACKAGES = {
    "wordnet": ["wordnet-base"],
    "gcide": ["dict-gcide"],
    "fortunes_en": ["fortunes-min", "fortunes"],
    "fortunes_it": ["fortunes-it"],
    "python_docs": ["python3.11-doc"],
}
LICENSES = {
    "wordnet": "WordNet 3.0 license (Princeton University; permissive, keep the copyright notice)",
    "gcide": "GPL-2.0-or-later (GNU Collaborative International Dictionary of English, from Webster 1913)",
    "fortunes_en": "unclear: debian/copyright puts the fortune program under BSD; the quotation files carry no "
                   "licence of their own and their quotations remain their authors' (offensive sets excluded)",
    "fortunes_it": "not copyrighted per the package's COPYING-POLICY; quotations of others' works, authors cited",
    "python_docs": "PSF License Agreement (Python 3.11 documentation)",
}
POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
VAL_SHARE = 0.01


# ---------------------------------------------------------------- fetching Debian packages


def fetch_packages(packages: list[str], cache_dir: Path) -> Path:
    """apt-get download + dpkg -x each package into cache_dir/root (kept between runs); returns the root."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    root = cache_dir / "root"
    for pkg in packages:
        marker = cache_dir / f"{pkg}.unpacked"
        if marker.exists():
            continue
        for tool in ("apt-get", "dpkg"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"`{tool}` is not available: building the default corpus needs a Debian system")
        debs = set(cache_dir.glob(f"{pkg}_*.deb"))
        if not debs:
            r = subprocess.run(["apt-get", "download", pkg], cwd=cache_dir, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"apt-get download {pkg} failed: {r.stderr.strip()[-300:]}")
            debs = set(cache_dir.glob(f"{pkg}_*.deb"))
        for deb in sorted(debs):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
        marker.write_text("ok\n")
    return root


# ---------------------------------------------------------------- parsers, one per source


def wordnet_pairs(root: Path, rng: random.Random) -> Iterator[dict]:
    """One pair per (synset, first lemma): the gloss's definition part, with its example when there is one."""
    templates = ["What does {w} mean?", "What is the meaning of {w}?", "Define {w}.", "What does the word {w} mean?"]
    for fname in ("data.noun", "data.verb", "data.adj", "data.adv"):
        for line in (root / "usr/share/wordnet" / fname).read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            fields, gloss = line.split("|", 1)
            parts = fields.split()
            pos = POS[parts[2]]
            word = parts[4].replace("_", " ")
            word = re.sub(r"\(.*\)$", "", word)  # adjective markers like (a), (p)
            definition, *examples = [g.strip() for g in gloss.strip().split(";")]
            answer = f"{word} ({pos}): {definition}."
            ex = next((e.strip('"') for e in examples if e.startswith('"')), None)
            if ex:
                answer += f' For example: "{ex}".'
            yield chat(rng.choice(templates).format(w=word), answer)


def gcide_pairs(root: Path, rng: random.Random) -> Iterator[dict]:
    """The first sense of each headword in the dictd file, cleaned of markup (line by line: no regex backtracking
    over the 40 MB text)."""
    text = gzip.open(root / "usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace").read()
    templates = ["Define {w}.", "What does {w} mean?", "What is the definition of {w}?"]
    head = re.compile(r"^([A-Za-z][A-Za-z '-]{1,30}) \\[^\\]*\\(?: \([^)]*\))?,? ?(n|v\. t|v\. i|a|adv)\.")
    labels = {"n": "noun", "a": "adjective", "adv": "adverb", "v. t": "verb", "v. i": "verb"}
    for block in text.split("\n\n"):
        m = head.match(block)
        if not m:
            continue
        word, label = m.group(1).lower(), labels[m.group(2)]
        para = block[m.end():].split("[1913 Webster]")[0].split("[Webster 1913")[0]
        para = para.replace("\n", " ")
        for _ in range(3):  # etymologies nest brackets: remove innermost groups first
            para = re.sub(r"\[[^\[\]]*\]", "", para)
        if "[" in para or "\\" in para:
            continue
        if " 1. " in para:
            para = para.split(" 1. ", 1)[1]
        para = re.sub(r"\{([^}]*)\}", r"\1", para)
        para = re.sub(r"^\s*(\([A-Z][A-Za-z]*\.\)\s*)+", "", para)
        d = re.sub(r"\s+", " ", para).strip().split(";")[0].rstrip(" .,:")
        if len(d) < 8 or len(d) > 300 or d.startswith(("Note", "See", "Same as", "2.")):
            continue
        yield chat(rng.choice(templates).format(w=word), f"{word} ({label}): {d}.")


def fortunes(root: Path, italian: bool, rng: random.Random) -> Iterator[dict]:
    """Every non-offensive fortune as plain text, and one in five also as an answer to a request for one."""
    base = root / "usr/share/games/fortunes"
    files = sorted((base / "it").glob("*") if italian else base.glob("*"))
    asks = (["Dimmi una frase.", "Raccontami un aforisma.", "Mi dici una citazione?"] if italian
            else ["Tell me a fortune.", "Give me a quote.", "Say something wise."])
    for f in files:
        if f.is_dir() or f.suffix in (".dat", ".u8") or f.is_symlink():
            continue
        for item in f.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            item = item.strip("%\n ")
            if not item or len(item) > 1200:
                continue
            yield {"text": item}
            if rng.random() < 0.2:
                yield chat(rng.choice(asks), item)


_RST_ROLE = re.compile(r":[a-z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")


def clean_rst(text: str) -> str:
    text = _RST_ROLE.sub(r"\1", text)
    text = re.sub(r"^\.\. (?!function|method|class)[a-z-]+::.*\n(?:   :.*\n)*", "", text, flags=re.M)
    text = re.sub(r"\*\*?([^*\n]+)\*\*?", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def python_docs(root: Path, rng: random.Random, max_chars: int) -> Iterator[dict]:
    """Tutorial, FAQ, HOWTOs and library pages as plain text (capped), and a pair per documented function."""
    src = root / "usr/share/doc/python3.11/html/_sources"
    if not src.is_dir():
        raise RuntimeError(f"python docs sources not found under {src}")
    pages = sorted(src.glob("tutorial/*.rst.txt")) + sorted(src.glob("faq/*.rst.txt")) + \
        sorted(src.glob("howto/*.rst.txt")) + sorted(src.glob("library/*.rst.txt"))
    used = 0
    func = re.compile(r"^\.\. (function|method):: ([\w.]+)\(([^)]*)\)\s*\n(?:   :.*\n)*\n((?:   \S.*\n)+)", re.M)
    for page in pages:
        raw = page.read_text(encoding="utf-8", errors="replace")
        for m in func.finditer(raw):
            name, desc = m.group(2), re.sub(r"\s+", " ", clean_rst(m.group(4)))
            if 20 < len(desc) < 600:
                kind = "function" if m.group(1) == "function" else "method"
                yield chat(f"What does the Python {kind} {name}() do?", desc)
        if used < max_chars:
            text = clean_rst(raw)
            used += len(text)
            yield {"text": text}


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def build_corpus(out: str | Path, cache_dir: str | Path, *, python_max_chars: int = 3_000_000, seed: int = 0,
                 progress=None) -> dict:
    """Fetch the packages, parse every source, write out/<source>.jsonl and out/sources.json."""
    out, cache_dir = Path(out), Path(cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = fetch_packages([p for pkgs in PACKAGES.values() for p in pkgs], cache_dir)
    makers = {
        "wordnet": lambda r: wordnet_pairs(root, r),
        "gcide": lambda r: gcide_pairs(root, r),
        "fortunes_en": lambda r: fortunes(root, False, r),
        "fortunes_it": lambda r: fortunes(root, True, r),
        "python_docs": lambda r: python_docs(root, r, python_max_chars),
    }
    summary = {}
    task = progress.add_task("building text corpus", total=len(makers)) if progress else None
    for name, make in makers.items():
        docs = list(make(random.Random(f"{seed}-{name}")))
        write_jsonl(out / f"{name}.jsonl", docs)
        summary[name] = {"documents": len(docs), "packages": PACKAGES[name], "license": LICENSES[name],
                         "chars": sum(len(json.dumps(d, ensure_ascii=False)) for d in docs)}
        if progress:
            progress.advance(task)
    (out / "sources.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def write_jsonl(path: Path, docs: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # not mkstemp: its 0600 would stick
    with open(tmp, "x", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- reading a corpus folder


def load_documents(folder: str | Path) -> list[dict]:
    """Every document of a folder (recursively, sorted by path): .jsonl lines and whole .txt files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist")
    docs = []
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".jsonl", ".txt") and p.is_file())
    if not files:
        raise ValueError(f"{folder} holds no .txt or .jsonl files")
    for path in files:
        if path.suffix == ".txt":
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                docs.append({"text": text})
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(d, dict) or not (isinstance(d.get("text"), str) or isinstance(d.get("messages"), list)):
                raise ValueError(f'{path}:{n}: each line needs "text" (a string) or "messages" (a list)')
            docs.append(d)
    return docs


def is_validation(doc: dict) -> bool:
    h = hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2 ** 64 < VAL_SHARE


def doc_text(doc: dict) -> str:
    """Plain text of a document, for tokenizer training."""
    if "text" in doc:
        return doc["text"]
    return "\n".join(m["content"] for m in doc["messages"])


def pack(docs: list[dict], tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents into one token stream with <|endoftext|> between them, and a parallel loss mask
    (1 = predict this token): plain text is all 1, conversations only in the assistant's turns."""
    from incasa.text.tokenizer import check_messages

    plain = [d["text"] for d in docs if "text" in d]
    plain_ids = iter(tokenizer.encode_batch(plain)) if plain else iter(())
    ids, mask = [], []
    for d in docs:
        if "text" in d:
            seq = next(plain_ids) + [tokenizer.eot_id]
            ids.append(seq)
            mask.append([1] * len(seq))
        else:
            for seg, trained in tokenizer.chat_segments(check_messages(d["messages"])):
                ids.append(seg)
                mask.append([int(trained)] * len(seg))
            ids.append([tokenizer.eot_id])
            mask.append([1])
    flat = np.fromiter((i for s in ids for i in s), dtype=np.int32)
    flat_mask = np.fromiter((m for s in mask for m in s), dtype=np.uint8)
    return flat, flat_mask


def main() -> None:
    from rich.progress import Progress

    p = argparse.ArgumentParser(description="Build the default text corpus from Debian packages.")
    p.add_argument("out", type=Path, help="output folder for <source>.jsonl and sources.json")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "incasa" / "debian")
    p.add_argument("--python-max-chars", type=int, default=3_000_000, help="cap on Python docs plain text")
    args = p.parse_args()
    with Progress() as progress:
        summary = build_corpus(args.out, args.cache_dir, python_max_chars=args.python_max_chars, progress=progress)
    for name, s in summary.items():
        print(f"{name:12s} {s['documents']:8d} documents  {s['chars'] / 1e6:6.1f} MB  {s['license']}")


if __name__ == "__main__":
    main()

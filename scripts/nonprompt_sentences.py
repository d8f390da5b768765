"""Write incasa/safety/data/nonprompt_en.json: text that is not an image prompt, as benign training rows.

Why: the guardrail's classifier learns from prompts only, and with more data it grew surer of single words ("keep",
"exit", "votes", "strip") in text unlike any prompt: the fourteenth round's candidate blocked 59 of the repository's
own strings (data/README.md). Ordinary technical English (docstrings, error messages, help texts) from other
projects shows it what such words look like outside a request for a picture. It is taken from OTHER projects on
purpose, so that benchmarks/guardrails.py's repository strings (incasa's own) stay text the classifier never saw.

What: string literals of a fixed list of permissively licensed packages (and the Python standard library), cut into
paragraphs of 10-300 characters like `repository_strings`, kept if they hold at least three words of letters, and
`--count` of them chosen deterministically (sha256 order). The packages, their versions and licences are recorded in
the file.

    python scripts/nonprompt_sentences.py                  # writes the default file
    python scripts/nonprompt_sentences.py --count 3000 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

# Package -> licence (as its metadata states it; checked by hand for these).
PACKAGES = {
    "numpy": "BSD-3-Clause", "sklearn": "BSD-3-Clause", "click": "BSD-3-Clause", "rich": "MIT", "typer": "MIT",
    "fastapi": "MIT", "httpx": "BSD-3-Clause", "jinja2": "BSD-3-Clause", "networkx": "BSD-3-Clause",
    "PIL": "MIT-CMU", "sqlalchemy": "MIT", "alembic": "MIT", "attr": "MIT", "aiohttp": "Apache-2.0",
    "fsspec": "BSD-3-Clause", "matplotlib": "PSF-based (Matplotlib License)",
}
DISTRIBUTIONS = {"sklearn": "scikit-learn", "PIL": "pillow", "attr": "attrs"}
WORD = re.compile(r"[A-Za-z]{2,}")
OUT = Path(__file__).resolve().parent.parent / "incasa" / "safety" / "data" / "nonprompt_en.json"


def paragraphs(path: Path) -> set[str]:
    """String literals of one Python file as paragraphs of 10-300 characters with at least three words."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for paragraph in node.value.split("\n\n"):
                text = " ".join(paragraph.split())
                if 10 <= len(text) <= 300 and " " in text and len(WORD.findall(text)) >= 3 and text.isascii():
                    found.add(text)
    return found


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name} is not installed here; install it or drop it from PACKAGES")
    return Path(next(iter(spec.submodule_search_locations)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=4000, help="how many paragraphs to keep (default 4000)")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON file")
    args = parser.parse_args()
    sources, found = {}, {}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = {name: package_dir(name) for name in PACKAGES}
    roots["python-stdlib"] = stdlib
    for name, root in roots.items():
        files = sorted(root.glob("*.py")) if name == "python-stdlib" else sorted(root.rglob("*.py"))
        texts = set().union(*(paragraphs(p) for p in files if "test" not in p.name))
        for text in texts:
            found.setdefault(text, name)
        if name == "python-stdlib":
            sources[name] = {"version": sys.version.split()[0], "licence": "PSF-2.0"}
        else:
            dist = DISTRIBUTIONS.get(name, name)
            sources[name] = {"version": importlib.metadata.version(dist), "licence": PACKAGES[name]}
    chosen = sorted(found, key=lambda t: hashlib.sha256(t.encode()).hexdigest())[: args.count]
    record = {
        "_about": "Paragraphs of string literals (docstrings, messages, help) from other projects' code: text that is "
        "not an image prompt, used as benign training rows for the prompt classifier and left out of its threshold "
        "budget. Written by scripts/nonprompt_sentences.py.",
        "sources": sources,
        "texts": [{"text": t, "source": found[t]} for t in sorted(chosen)],
    }
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"{len(chosen)} of {len(found)} paragraphs from {len(roots)} sources -> {args.out}")


if __name__ == "__main__":
    main()

"""The Debian-source parsers on miniature files laid out like the packages (no network, no apt)."""

import gzip
import json
import random

from incasa.text.data import build_corpus, fortunes, gcide_pairs, is_validation, pack, python_docs, wordnet_pairs
from incasa.text.tokenizer import train_tokenizer


def _root(tmp_path):
    r = tmp_path / "root"
    wn = r / "usr/share/wordnet"
    wn.mkdir(parents=True)
    (wn / "data.noun").write_text(
        "  1 This software and database is being provided to you, the LICENSEE, by\n"
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 000 | a member of the genus Canis; "
        '"the dog barked all night"  \n')
    for f in ("data.verb", "data.adj", "data.adv"):
        (wn / f).write_text("")
    dd = r / "usr/share/dictd"
    dd.mkdir(parents=True)
    with gzip.open(dd / "gcide.dict.dz", "wt") as f:
        f.write('Dog \\Dog\\ (d[o^]g), n. [AS. docga.]\n   1. (Zool.) A quadruped of the genus {Canis}, esp. the\n'
                '      domestic dog.\n      [1913 Webster]\n\n'
                'Quickly \\Quick"ly\\, adv.\n   Speedily; with haste.\n   [1913 Webster]\n\n'
                'Obscure \\Ob*scure"\\, a. [See {Note}]\n   See {Dark}.\n   [1913 Webster]\n')
    fo = r / "usr/share/games/fortunes"
    (fo / "it").mkdir(parents=True)
    (fo / "wisdom").write_text("Be kind.\n%\nA second fortune,\n  on two lines.\n%\n")
    (fo / "wisdom.dat").write_bytes(b"\x00\x01")
    (fo / "it" / "saggezza").write_text("Sii gentile.\n%\n")
    docs = r / "usr/share/doc/python3.11/html/_sources/library"
    docs.mkdir(parents=True)
    (docs / "textwrap.rst.txt").write_text(
        ":mod:`textwrap` --- Text wrapping\n=================\n\n.. module:: textwrap\n   :synopsis: wrap\n\n"
        ".. function:: wrap(text, width=70)\n\n   Wraps the single paragraph in *text* so every line is at most\n"
        "   *width* characters long.\n\nSee :func:`fill`.\n")
    return r


def _qa(doc):
    return doc["messages"][0]["content"], doc["messages"][1]["content"]


def test_parsers(tmp_path):
    root, rng = _root(tmp_path), random.Random(0)
    (wn,) = list(wordnet_pairs(root, rng))
    assert "dog" in _qa(wn)[0]
    assert _qa(wn)[1] == 'dog (noun): a member of the genus Canis. For example: "the dog barked all night".'
    gc = [_qa(d) for d in gcide_pairs(root, rng)]
    assert [a for _, a in gc] == ["dog (noun): A quadruped of the genus Canis, esp. the domestic dog.",
                                  "quickly (adverb): Speedily."]  # "See Dark." is no definition
    en = list(fortunes(root, italian=False, rng=random.Random(0)))
    assert [d["text"] for d in en if "text" in d] == ["Be kind.", "A second fortune,\n  on two lines."]
    it = list(fortunes(root, italian=True, rng=rng))
    assert it[0] == {"text": "Sii gentile."}
    py = list(python_docs(root, rng, max_chars=10_000))
    pair = next(d for d in py if "messages" in d)
    assert _qa(pair) == ("What does the Python function wrap() do?",
                         "Wraps the single paragraph in text so every line is at most width characters long.")
    text = next(d["text"] for d in py if "text" in d)
    assert ".. module" not in text and ":func:" not in text and "See fill." in text


def test_build_corpus_from_an_unpacked_cache(tmp_path):
    cache = tmp_path / "cache"
    _root(cache)  # cache/root, as dpkg -x would leave it
    for pkgs in (["wordnet-base"], ["dict-gcide"], ["fortunes-min", "fortunes"], ["fortunes-it"], ["python3.11-doc"]):
        for p in pkgs:
            (cache / f"{p}.unpacked").write_text("ok\n")  # as if apt-get download + dpkg -x had run
    summary = build_corpus(tmp_path / "out", cache)
    assert summary["wordnet"]["documents"] == 1 and "GPL" in summary["gcide"]["license"]
    assert json.loads((tmp_path / "out" / "sources.json").read_text()) == summary
    lines = (tmp_path / "out" / "gcide.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all("messages" in json.loads(x) for x in lines)


def test_pack_masks_only_assistant_turns_and_split_is_stable():
    tok = train_tokenizer(["What does dog mean? dog (noun): an animal."] * 10, vocab_size=280)
    docs = [{"text": "plain"},
            {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}]
    ids, mask = pack(docs, tok)
    assert len(ids) == len(mask)
    assert tok.decode(ids[mask == 1]) == "plain<|endoftext|>A.<|end|>\n<|endoftext|>"
    assert is_validation(docs[0]) == is_validation(dict(docs[0]))
    share = sum(is_validation({"text": str(i)}) for i in range(20000)) / 20000
    assert 0.005 < share < 0.015

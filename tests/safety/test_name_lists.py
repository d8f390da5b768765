"""scripts/name_lists.py --extend: the data file's names stay as they are, new ones pass the same filters."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_extend_keeps_the_listed_names_and_filters_the_new_ones(tmp_path):
    base = json.loads((REPO / "incasa/safety/data/public_figures.json").read_text(encoding="utf-8"))
    (tmp_path / "new").mkdir()
    new = {"region": "en_world", "full": ["Zorblax Quimby", "Zorblax Quimby", base["regions"]["en_world"]["full"][0]],
           "short": ["Quimby", "Table", "Zyx"], "aliases": []}
    (tmp_path / "new" / "en_world.json").write_text(json.dumps(new), encoding="utf-8")
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(REPO / "scripts/name_lists.py"), "people", str(tmp_path / "new"),
                          "--extend", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    merged = json.loads(out.read_text(encoding="utf-8"))
    for region, kept in base["regions"].items():  # every listed name kept, in place
        assert merged["regions"][region] == kept
    # the new region takes a suffix rather than mixing with (or replacing) a listed one of the same name
    assert merged["regions"]["en_world++"] == {"full": ["Zorblax Quimby"], "short": ["Quimby"], "aliases": []}
    added = merged["extensions"][-1]
    assert added["dropped"]["duplicate"] == 2  # once within the new list, once already listed
    assert added["dropped"]["short"] == ["Zyx"] and added["dropped"]["benign_word"] == ["Table"]

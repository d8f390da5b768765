"""`incasa arena ...` through the root Typer app: happy paths and one-line errors with a non-zero exit."""

import json

from typer.testing import CliRunner

from incasa.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["arena", *args])


def test_models_pool_recompute_export_import(tmp_path):
    db = str(tmp_path / "arena.db")
    assert run("models", "add", "standin", "rings", "--adapter", "standin", "--db", db).exit_code == 0
    added = run("models", "add", "standin", "checks", "--adapter", "standin", "--style", "checks", "--db", db)
    assert added.exit_code == 0
    assert run("models", "add", "remote", "v1", "--adapter", "openai", "--base-url", "http://127.0.0.1:9",
               "--db", db).exit_code == 0
    listed = run("models", "list", "--db", db)
    assert listed.exit_code == 0 and "standin/checks" in listed.output and "remote/v1" in listed.output
    assert run("models", "retire", "remote/v1", "--db", db).exit_code == 0
    filled = run("pool", "fill", "--count", "4", "--db", db)
    assert filled.exit_code == 0 and "4 battles ready, 0 with generation errors" in filled.output
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# mine\na tiny robot\na paper boat\n")
    assert "2 prompts" in run("prompts", "add", str(prompts), "--db", db).output
    # Votes arrive by import (the web app is tested elsewhere).
    votes = tmp_path / "votes.jsonl"
    votes.write_text("".join(json.dumps({"prompt": "p", "model_a": "standin/rings", "model_b": "standin/checks",
                                         "choice": c}) + "\n" for c in ["a"] * 6 + ["b"] * 2 + ["tie"] * 2))
    assert "imported 10 battles" in run("import", str(votes), "--db", db).output
    out = tmp_path / "board.json"
    shown = run("recompute", "--db", db, "--json", str(out))
    assert shown.exit_code == 0 and "10 counted votes" in shown.output and "remote/v1" in shown.output
    board = json.loads(out.read_text())
    ratings = {r["name"]: r["rating"] for r in board["rows"]}
    assert ratings["standin/rings"] > ratings["standin/checks"] and ratings["remote/v1"] is None
    davidson = run("recompute", "--db", db, "--ties", "davidson", "--anchor", "standin/checks")
    assert davidson.exit_code == 0, davidson.output
    exported = run("export", str(tmp_path / "all.parquet"), "--db", db)
    assert exported.exit_code == 0 and "wrote 14 battles" in exported.output


def test_errors_are_one_line(tmp_path):
    db = str(tmp_path / "arena.db")
    run("models", "add", "m", "v", "--adapter", "standin", "--db", db)
    cases = [
        (("models", "add", "m", "v", "--adapter", "standin", "--db", db), "already exists"),
        (("models", "add", "m", "w", "--adapter", "gpt", "--db", db), "--adapter must be"),
        (("models", "add", "m", "w", "--adapter", "openai", "--base-url", "localhost", "--db", db), "http(s) URL"),
        (("models", "retire", "m/zzz", "--db", db), "unknown variant"),
        (("import", str(tmp_path / "missing.jsonl"), "--db", db), "no file"),
        (("export", str(tmp_path / "x.csv"), "--db", db), ".jsonl or .parquet"),
        (("recompute", "--bootstrap-rounds", "10", "--db", db), "at least 100"),
        (("recompute", "--ties", "third", "--db", db), "'half' or 'davidson'"),
        (("recompute", "--anchor", "m/v", "--db", db), "not a variant with counted votes"),
        (("serve", "--min-view-s", "-1", "--db", db), "--min-view-s must be >= 0"),
        (("serve", "--pool", "-2", "--db", db), "--pool must be >= 0"),
        (("recompute", "--db", "postgresql://nobody@127.0.0.1:9/none"), "database:"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_help():
    for args in (("--help",), ("serve", "--help"), ("models", "add", "--help"), ("recompute", "--help")):
        result = run(*args)
        assert result.exit_code == 0 and "Usage" in result.output

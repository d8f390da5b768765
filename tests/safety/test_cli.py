import json

import pytest
from typer.testing import CliRunner

from incasa.cli import app

runner = CliRunner()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("INCASA_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("INCASA_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return tmp_path


def test_check_blocks_with_exit_code_and_logs(env):
    result = runner.invoke(app, ["safety", "check", "a swastika flag"])
    assert result.exit_code == 3 and result.output.startswith("block [hate_symbols]")
    result = runner.invoke(app, ["safety", "check", "--json", "shooting a photo at sunset"])
    assert result.exit_code == 0 and json.loads(result.output)["action"] == "allow"
    lines = [json.loads(line) for line in (env / "audit.jsonl").read_text().splitlines()]
    assert [r["action"] for r in lines] == ["block", "allow"] and "prompt" not in lines[0]


def test_bad_policy_is_one_line_error(env):
    (env / "p.toml").write_text('[actions]\nself_harm = "allow"\n')
    result = runner.invoke(app, ["safety", "check", "--policy", str(env / "p.toml"), "hello"])
    assert result.exit_code == 1 and "hard category" in result.output and "Traceback" not in result.output


def test_keys_sign_verify_strip_flow(env, photo):
    from incasa.safety.provenance import sign_image
    from incasa.safety.watermark import embed, make_payload

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert "already exist" in runner.invoke(app, ["keys", "init"]).output
    shown = runner.invoke(app, ["keys", "show"])
    assert shown.exit_code == 0 and "key id" in shown.output

    import io

    buf = io.BytesIO()
    embed(photo, make_payload("incasa-image-tiny", "k")).save(buf, "PNG")
    image = env / "out.png"
    image.write_bytes(
        sign_image(
            buf.getvalue(),
            "png",
            title="out.png",
            model="incasa-image-tiny",
            model_version="0.1",
            parameters={},
            keys_dir=env / "keys",
        )
    )
    result = runner.invoke(app, ["provenance", "verify", "--json", str(image)])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["state"] == "valid" and report["trust"] == "untrusted"
    assert report["watermark"]["found"]

    result = runner.invoke(app, ["provenance", "strip", str(image)])
    assert result.exit_code == 0
    stripped = env / "out.stripped.png"
    result = runner.invoke(app, ["provenance", "verify", str(stripped)])
    assert result.exit_code == 1 and "absent" in result.output and "watermark: found" in result.output
    events = [json.loads(line)["event"] for line in (env / "audit.jsonl").read_text().splitlines()]
    assert events == ["c2pa_strip"]


def test_verify_rejects_non_images(env):
    (env / "notes.txt").write_text("hello")
    result = runner.invoke(app, ["provenance", "verify", str(env / "notes.txt")])
    assert result.exit_code == 1 and result.output.startswith("error:") and "Traceback" not in result.output
    result = runner.invoke(app, ["provenance", "verify", str(env / "missing.png")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_train_refuses_bad_options_before_any_work(env):
    for args, words in ((["--fresh-weight", "0"], "0.01"), (["--kind", "deep"], "linear or blend")):
        result = runner.invoke(app, ["safety", "train", "--out", str(env / "m.safetensors"), *args])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, args
        assert not (env / "m.safetensors").exists()


def test_help_mentions_every_command():
    for group, commands in {
        "safety": ["check", "check-image", "train", "prompts"],
        "keys": ["init", "show"],
        "provenance": ["verify", "strip"],
    }.items():
        output = runner.invoke(app, [group, "--help"]).output
        assert all(c in output for c in commands)

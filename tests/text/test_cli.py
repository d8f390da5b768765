"""`incasa chat` and `incasa train text` through the root app: happy paths and one-line errors (exit 2)."""

from typer.testing import CliRunner

from incasa.cli import app

from .conftest import make_corpus

runner = CliRunner()


def _run(*args, input=None):
    result = runner.invoke(app, list(map(str, args)), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_chat_one_shot_and_interactive(text_checkpoint):
    r = _run("chat", "What does dog mean?", "-c", text_checkpoint, "--max-tokens", 8, "--temperature", 0)
    assert r.exit_code == 0, r.output
    assert r.output.endswith("\n")
    r2 = _run("chat", "What does dog mean?", "-c", text_checkpoint, "--max-tokens", 8, "--temperature", 0)
    assert r2.output == r.output  # greedy is deterministic
    r3 = _run("chat", "-c", text_checkpoint, "--max-tokens", 4, "--seed", 1,
              input="What does cat mean?\n/reset\nWhat does sun mean?\n/exit\n")
    assert r3.exit_code == 0, r3.output


def test_chat_bad_input_is_one_line_exit_2(text_checkpoint, tmp_path):
    for args, msg in [(("chat", "  ", "-c", text_checkpoint), "empty"),
                      (("chat", "hi", "-c", tmp_path / "nope.safetensors"), "does not exist"),
                      (("chat", "hi", "-c", text_checkpoint, "--top-p", 3), "top_p"),
                      (("chat", "hi", "-c", text_checkpoint, "--overflow", "maybe"), "overflow"),
                      (("chat", "hi <|end|>", "-c", text_checkpoint), "reserved")]:
        r = _run(*args)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (args, r.output)


def test_train_text_command(tmp_path):
    data = make_corpus(tmp_path / "corpus", repeat=2)
    r = _run("train", "text", "--data", data, "--out", tmp_path / "run", "--preset", "tiny", "--vocab-size", 300,
             "--seq-len", 32, "--steps", 3, "--batch-size", 2, "--warmup", 1, "--eval-every", 3)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "tokenizer.json").exists()
    for args, msg in [(("--data", tmp_path / "missing", "--out", tmp_path / "x"), "does not exist"),
                      (("--data", data, "--out", tmp_path / "y", "--preset", "huge"), "unknown preset"),
                      (("--data", data, "--out", tmp_path / "z", "--steps", 0), "positive")]:
        r = _run("train", "text", *args)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (args, r.output)
    assert _run("train", "text", "--help").exit_code == 0 and _run("chat", "--help").exit_code == 0

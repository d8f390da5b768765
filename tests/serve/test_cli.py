"""`incasa serve` on the command line: help, and bad settings as one line with exit code 2 (no traceback)."""

from typer.testing import CliRunner

from incasa.cli import app

runner = CliRunner()


def test_serve_help_lists_the_flags():
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--port", "--api-key", "--image-model", "--queue-size", "--workers"):
        assert flag in result.output


def test_bad_settings_fail_with_one_line():
    result = runner.invoke(app, ["serve", "--queue-size", "0"])
    assert result.exit_code == 2 and "queue_size" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["serve", "--image-model", "x=/does/not/exist.safetensors"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["serve", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_settings_come_from_the_environment_and_flags_win(monkeypatch):
    from incasa.serve.settings import ServeSettings

    monkeypatch.setenv("INCASA_SERVE_API_KEYS", "a, b")
    monkeypatch.setenv("INCASA_SERVE_QUEUE_SIZE", "7")
    monkeypatch.setenv("INCASA_SERVE_IMAGE_MODELS", "emoji=/m/a.safetensors,/m/b.safetensors")
    s = ServeSettings(queue_size=9)
    assert s.api_keys == ["a", "b"] and s.queue_size == 9
    assert [(k, str(v)) for k, v in s.image_checkpoints()] == [("emoji", "/m/a.safetensors"), ("", "/m/b.safetensors")]
    monkeypatch.delenv("INCASA_SERVE_IMAGE_MODELS")
    assert ServeSettings().image_checkpoints() == [("", None)]  # the shipped default

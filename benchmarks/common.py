"""What every benchmark records beside its numbers: the device, the date and the commit, written atomically."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def environment() -> dict:
    import torch

    # INCASA_COMMIT: the device machine gets a copy of the working tree whose git HEAD can be stale, so the
    # command there names the commit it runs
    commit = os.environ.get("INCASA_COMMIT")
    try:
        commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or "uncommitted"
    except OSError:
        commit = "unknown"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return {"device": device, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "torch": torch.__version__, "python": platform.python_version()}


def write_result(name: str, payload: dict, env: dict | None = None) -> Path:
    """env: the device/date/commit to record instead of this machine's (a merge of results measured elsewhere)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**(env or environment()), **payload}, indent=2))
    tmp.replace(path)
    return path

"""Every training command a result under book/results/ records still runs unchanged on today's command line.

A reader reproduces a shipped number by running the ``command`` its ``meta.json`` (or ``*-meta.json``)
records.  Each such ``python -m convmixer.train ...`` command must still parse, flag for flag, and give
the settings the run's stored ``config.json`` holds (flags renamed since keep working as aliases).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from convmixer.checkpoint import RUNTIME_FIELDS
from convmixer.config import parse_config

RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"
PREFIX = ["python", "-m", "convmixer.train"]


def recorded_runs() -> list[tuple[Path, Path]]:
    """(meta file, config file) of every run with a recorded trainer command."""
    pairs = []
    for meta in sorted(RESULTS.rglob("*meta.json")):
        command = json.loads(meta.read_text()).get("command", "")
        if not command.startswith(" ".join(PREFIX)):
            continue
        config = meta.with_name(meta.name.replace("meta.json", "config.json"))
        pairs.append((meta, config))
    return pairs


def test_results_record_their_commands():
    folders = {meta.parent.name for meta, _ in recorded_runs()}
    assert "results" in folders and len(recorded_runs()) >= 33 + 2   # the ablation grid and the two shipped models


@pytest.mark.parametrize("meta, config", recorded_runs(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_recorded_command_gives_the_recorded_settings(meta, config):
    argv = shlex.split(json.loads(meta.read_text())["command"])[len(PREFIX):]
    cfg = parse_config(argv).to_dict()
    stored = json.loads(config.read_text())["train"]
    differences = {k: (v, cfg.get(k)) for k, v in stored.items() if k not in RUNTIME_FIELDS and cfg.get(k) != v}
    assert not differences, f"{meta.relative_to(RESULTS)}: stored vs parsed today: {differences}"

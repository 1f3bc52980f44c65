"""Shared pytest fixtures: the repository root and a shell environment like path.sh's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shell_env() -> dict:
    """Environment for running the recipe's shell scripts with this interpreter's venv."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{REPO / 'local'}:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO)
    env["LC_ALL"] = "C"
    return env


def run_script(args, cwd, env, check=False) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result

"""Under CI=true a test never skips for a missing dataset, backend or optional package: it errors and
names what is missing (tests/conftest.py: ``missing``, ``shared_data``, ``need_module``, ``need_backend``)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

CASES = textwrap.dedent('''
    from conftest import need_backend, need_module, shared_data

    def test_package():
        need_module("no_such_package_xyz", "export")

    def test_dataset():
        shared_data("no_such_dataset")

    def test_backend():
        need_backend("no_such_backend")

    def test_present():
        assert need_module("json").dumps(1) == "1"
''')


def run_cases(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_module_level.py").write_text('from conftest import need_module\n'
                                                   'need_module("no_such_module_level_xyz", "export")\n'
                                                   'def test_never():\n    pass\n')
    (tmp_path / "data").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(SEGTRAIN_SHARED_DATA=str(tmp_path / "data"), PYTHONPATH=str(HERE.parent))
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsfE", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--continue-on-collection-errors", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_things_skip_on_a_users_machine(tmp_path):
    done = run_cases(tmp_path, None)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed, 4 skipped" in done.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_things_are_errors_that_name_them_under_ci(tmp_path, ci):
    done = run_cases(tmp_path, ci)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "3 failed, 1 passed, 1 error" in done.stdout
    for what in ("needs the Python package no_such_package_xyz (pip install -e \".[export]\"",
                 f"needs {tmp_path / 'data' / 'no_such_dataset'}", "needs the no_such_backend backend",
                 "needs the Python package no_such_module_level_xyz"):
        assert f"CI=true: {what}" in done.stdout, what

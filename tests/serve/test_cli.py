"""`dlforge serve` as users start it: where the run, host and port come from; several workers; bad arguments."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dlforge.errors import DlforgeError
from dlforge.serve import resolve
from tests.conftest import cli
from tests.serve.conftest import ProcessServer, digit_pngs


def test_where_run_host_and_port_come_from(monkeypatch, tmp_path: Path) -> None:
    for name in ("DLFORGE_RUN", "DLFORGE_HOST", "DLFORGE_PORT", "AIP_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert resolve(tmp_path, None, None) == (tmp_path, "127.0.0.1", 8000)
    assert resolve(tmp_path, "0.0.0.0", 9000) == (tmp_path, "0.0.0.0", 9000)
    monkeypatch.setenv("AIP_HTTP_PORT", "7080")  # Vertex AI
    assert resolve(tmp_path, None, None)[2] == 7080
    monkeypatch.setenv("DLFORGE_RUN", str(tmp_path))
    monkeypatch.setenv("DLFORGE_PORT", "8081")
    monkeypatch.setenv("DLFORGE_HOST", "0.0.0.0")
    assert resolve(None, None, None) == (tmp_path, "0.0.0.0", 8081)
    monkeypatch.delenv("DLFORGE_RUN")
    if not Path("/opt/ml/model").exists():  # SageMaker's place, absent here: a clear error
        with pytest.raises(DlforgeError, match="/opt/ml/model"):
            resolve(None, None, None)
    monkeypatch.setenv("DLFORGE_PORT", "http")
    with pytest.raises(DlforgeError, match="DLFORGE_PORT"):
        resolve(tmp_path, None, None)


def test_bad_arguments_exit_2_with_one_line(trained_run, tmp_path: Path) -> None:
    proc = cli("serve", trained_run.path, "--backend", "tensorrt")
    assert proc.returncode == 2 and "--backend tensorrt" in proc.stderr
    proc = cli("serve", tmp_path)
    assert proc.returncode == 2 and "not a dlforge run directory" in proc.stderr
    proc = cli("serve", trained_run.path, "--set", "serve.limits.timeout_s=-1")
    assert proc.returncode == 2 and "serve.limits.timeout_s" in proc.stderr


def test_two_workers_answer(trained_run) -> None:
    images = digit_pngs(4, seed=12)
    with ProcessServer([str(trained_run.path), "--workers", "2"]) as server:
        answers = [httpx.post(f"{server.url}/predict", json={"instances": [i]}, timeout=30) for i in images * 3]
        assert all(r.status_code == 200 for r in answers)
        assert server.terminate() == 0

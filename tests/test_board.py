"""The promotion board (``mlops status --output markdown|html``): where each release is, and what waits
for approval, checked on a real Git repository; the HTML page is rendered by a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from gitfixtures import build_repo, git, mlops, release_id_of

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def repo_with_a_pending_promotion(tmp_path: Path) -> Path:
    """dev runs 3, staging 2, prod 1; a promotion of 3 to staging is committed on its branch, not merged."""
    root = build_repo(tmp_path / "repo")
    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging")
    assert result.exit_code == 0, result.output
    return root


def test_markdown_board_shows_each_environment_and_what_awaits_approval(repo_with_a_pending_promotion):
    root = repo_with_a_pending_promotion
    result = mlops(root, "status", "--output", "markdown")
    assert result.exit_code == 0, result.output
    board = result.output
    assert "## churn" in board and "| dev | staging | prod |" in board
    assert f"v3 `{release_id_of(3)}`" in board and f"v2 `{release_id_of(2)}`<br>behind vs dev" in board
    assert "```mermaid\nflowchart LR" in board and "dev --> staging" in board and "staging --> prod" in board
    branch = f"promote/churn/staging/{release_id_of(3)}"
    assert f"- promote to staging: {release_id_of(3)} (branch `{branch}`)" in board
    assert f'(["promote {release_id_of(3)}: awaiting approval"]) -.-> staging' in board

    git(root, "merge", "--quiet", "--no-ff", "-m", "Merge pull request #1", branch)
    merged = mlops(root, "status", "--output", "markdown").output
    assert "awaiting approval" not in merged and f"v3 `{release_id_of(3)}`" in merged.split("|")[-3]


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "chromium is required (Debian package chromium; .ci/run installs it)"
    return found


def test_html_board_renders_in_a_real_browser(repo_with_a_pending_promotion, tmp_path):
    root = repo_with_a_pending_promotion
    result = mlops(root, "status", "--output", "html")
    assert result.exit_code == 0, result.output
    page = tmp_path / "board.html"
    page.write_text(result.output)
    assert "<script" not in result.output and "http" not in result.output  # self-contained

    profile = tmp_path / "profile"
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, env=env)
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count('class="env"') == 3 and 'data-model="churn"' in dom.stdout
    assert "awaiting approval" in dom.stdout

    shot = tmp_path / "board.png"
    done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           "--window-size=1000,500", page.as_uri()], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0 and shot.is_file(), done.stderr
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 500)
    colours = image.getcolors(maxcolors=1_000_000)
    lane_fill = sum(count for count, rgb in colours if rgb == (0xEE, 0xF4, 0xFB))
    pending_fill = sum(count for count, rgb in colours if rgb == (0xFF, 0xF4, 0xD6))
    dark_text = sum(count for count, (r, g, b) in colours if r + g + b < 200)
    assert lane_fill > 20_000, "the three environment boxes were not drawn"
    assert pending_fill > 2_000, "the pending promotion was not drawn"
    assert dark_text > 500, "no text was drawn"

"""Our images and the pods that run them agree on one user, uid/gid >= 10000 (naming.RUN_AS_UID)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from generator.spec.naming import MIN_RUN_AS_UID, RUN_AS_UID

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(REPO.glob("components/*/Dockerfile"))


def test_there_are_images_to_check() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= {"drift_detector", "model_server", "retrain"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_user_and_group_are_at_least_10000(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    assert RUN_AS_UID >= MIN_RUN_AS_UID
    groups = [int(g) for g in re.findall(r"groupadd [^\n]*--gid (\d+)", text)]
    users = re.findall(r"useradd [^\n]*--uid (\d+) --gid (\d+)", text)
    final_user = re.findall(r"^USER (\S+)$", text, re.M)[-1]
    assert groups == [RUN_AS_UID]
    assert [(int(u), int(g)) for u, g in users] == [(RUN_AS_UID, RUN_AS_UID)]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert final_user == f"{RUN_AS_UID}:{RUN_AS_UID}"

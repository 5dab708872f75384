"""No BSL, SSPL or commercial code in our images unless explicitly allowed, and the README says what is in them.

Each image's venv is built from its Dockerfile (``tests/imagebuild.py``, cached across runs) and every
installed distribution's licence metadata is read there (``tests/licences.py``).
"""

from __future__ import annotations

import pytest

from helpers import REPO
from licences import ALLOWED, BLOCK, IMAGES, Distribution, all_images, forbidden, licence_of, readme_block


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Distribution]]:
    return all_images(tmp_path_factory.mktemp("licence-images"))


@pytest.mark.parametrize("image", [i for i in IMAGES if "opt-in" not in i])
def test_default_images_hold_no_bsl_sspl_or_commercial_code(found: dict[str, list[Distribution]], image: str) -> None:
    assert found[image], f"{image}: no distributions listed"
    assert forbidden(image, found[image]) == []
    assert not any((image, d.name) in ALLOWED for d in found[image])  # nothing is waived in a default image


def test_the_opt_in_image_holds_exactly_the_allowed_bsl_distribution(found: dict[str, list[Distribution]]) -> None:
    image = "model-server (opt-in seldon-core 1.19.0)"
    assert forbidden(image, found[image]) == []
    seldon = next(d for d in found[image] if d.name == "seldon-core")
    assert (seldon.version, seldon.licence) == ("1.19.0", "BUSL-1.1")
    default = next(d for d in found["model-server"] if d.name == "seldon-core")
    assert (default.version, default.licence) == ("1.17.1", "Apache-2.0")


def test_a_bsl_distribution_is_refused_unless_allowed() -> None:
    bsl = Distribution("alibi-detect", "0.13.0", *licence_of(
        {"expression": "", "classifiers": [], "license": "Business Source License 1.1"}))
    assert bsl.licence == "BUSL-1.1"
    assert forbidden("drift-detector", [bsl]) == ["alibi-detect 0.13.0: BUSL-1.1"]
    unknown = Distribution("mystery", "1", *licence_of({"expression": "", "classifiers": [], "license": ""}))
    assert forbidden("drift-detector", [unknown]) == ["mystery 1: unknown"]
    sspl = Distribution("x", "1", *licence_of({"expression": "SSPL-1.0", "classifiers": [], "license": ""}))
    assert forbidden("retrain", [sspl]) == ["x 1: SSPL-1.0"]


def test_the_readme_licence_table_is_current(found: dict[str, list[Distribution]]) -> None:
    readme = (REPO / "README.md").read_text()
    match = BLOCK.search(readme)
    assert match, "README.md lacks the image-licences markers"
    assert match.group(0) == readme_block(found), "README.md's image licence table is stale: run " \
        ".venv/bin/python tests/licences.py --write"
    assert "The default images contain no BSL code" in readme



def test_selecting_the_alibi_backend_names_its_licence(caplog: pytest.LogCaptureFixture) -> None:
    """alibi-detect is in no image; where it is installed and chosen, the log says it is BSL 1.1."""
    from drift_detector.methods import alibi_adapter

    alibi_adapter._LICENCE_NAMED = False
    with caplog.at_level("WARNING"):
        alibi_adapter.import_alibi()
        alibi_adapter.import_alibi()
    named = [r.getMessage() for r in caplog.records if "Business Source License 1.1" in r.getMessage()]
    assert len(named) == 1 and "alibi-detect 0.13" in named[0] and "'builtin' backend is Apache-2.0" in named[0]


def test_selecting_the_alibi_backend_where_it_is_not_installed_names_its_licence_and_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The drift detector image has no alibi-detect: choosing it there fails with how to add it and its licence."""
    import sys

    from drift_detector.methods import alibi_adapter

    monkeypatch.setitem(sys.modules, "alibi_detect", None)  # as in the image: the import fails
    with pytest.raises(RuntimeError) as refused:
        alibi_adapter.import_alibi()
    message = str(refused.value)
    assert "pip install 'alibi-detect>=0.13,<0.14'" in message and "BSL 1.1" in message
    assert "'builtin' backend needs no extra package" in message

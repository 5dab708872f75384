"""Licences of what each image installs, read from the distributions' own metadata in the image's venv.

:func:`image_licences` builds an image's venv (``tests/imagebuild.py``, cached) and lists every installed
distribution with its licence: the ``License-Expression`` field when there is one, else the ``License ::``
classifiers, else the free-text ``License`` field, else the first line of its licence file (``License-File``),
each mapped to an SPDX-style name by :data:`SPDX`.
:func:`forbidden` names the distributions under a licence that is not open source (BSL, SSPL, commercial,
proprietary) and not allowed for that image by :data:`ALLOWED`. :func:`readme_block` is the README's
licence table (between the ``image-licences`` markers); ``python tests/licences.py --write`` rewrites it
from the images, and ``tests/test_image_licences.py`` fails when it is not current.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import REPO  # noqa: E402 - run as a script too
from imagebuild import build_image  # noqa: E402

IMAGES: dict[str, tuple[str, dict[str, str] | None, str]] = {
    "model-server": ("model_server", None, "default: seldon-core 1.17.1, Python 3.11"),
    "model-server (opt-in seldon-core 1.19.0)": (
        "model_server", {"PYTHON_IMAGE": "python:3.12.12-slim-bookworm",
                         "REQUIREMENTS": "components/model_server/requirements-seldon-1.19.txt"},
        "--build-arg REQUIREMENTS=components/model_server/requirements-seldon-1.19.txt, Python 3.12"),
    "drift-detector": ("drift_detector", None, "default"),
    "retrain": ("retrain", None, "default (also runs the retrain trigger)"),
}
"""README name → (component, build arguments, what the build is)."""

ALLOWED: dict[tuple[str, str], str] = {
    ("model-server (opt-in seldon-core 1.19.0)", "seldon-core"):
        "BSL 1.1 since 1.18.0: built only on request, for users who hold a licence from Seldon",
}
"""(image, distribution) → why a non-open-source licence is accepted there."""

NOT_OPEN = re.compile(r"BU?SL|Business Source|SSPL|Server Side Public|Commercial|Proprietary", re.IGNORECASE)

SPDX = {
    "apache 2.0": "Apache-2.0", "apache-2.0": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license, version 2.0": "Apache-2.0",
    "apache 2": "Apache-2.0", "apache": "Apache-2.0", "apache-2": "Apache-2.0", "apache v2": "Apache-2.0",
    "apache license version 2.0": "Apache-2.0", "apache-2.0 license": "Apache-2.0",
    "mit": "MIT", "mit license": "MIT", "bsd": "BSD", "bsd license": "BSD", "new bsd": "BSD-3-Clause",
    "bsd-3-clause": "BSD-3-Clause", "3-clause bsd": "BSD-3-Clause", "bsd 3-clause": "BSD-3-Clause",
    "bsd-2-clause": "BSD-2-Clause", "isc": "ISC", "isc license (iscl)": "ISC",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0", "mpl-2.0": "MPL-2.0", "mpl 2.0": "MPL-2.0",
    "python software foundation license": "PSF-2.0", "psf": "PSF-2.0", "psf-2.0": "PSF-2.0",
    "the unlicense (unlicense)": "Unlicense", "unlicense": "Unlicense",
    "historical permission notice and disclaimer (hpnd)": "HPND",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.0-or-later",
    "3-clause bsd license": "BSD-3-Clause", "mit license (mit)": "MIT",
    "business source license 1.1": "BUSL-1.1", "bsl 1.1": "BUSL-1.1", "busl-1.1": "BUSL-1.1",
}
"""How the free-text licence names and classifiers found in these images read as SPDX identifiers."""

_LIST = """
import json
from importlib.metadata import distributions
rows = []
for d in distributions():
    m = d.metadata
    rows.append({"name": m["Name"], "version": m["Version"], "expression": m.get("License-Expression") or "",
                 "license": (m.get("License") or "").strip().splitlines()[0][:80] if m.get("License") else "",
                 "classifiers": [c.split(" :: ")[-1] for c in m.get_all("Classifier") or []
                                 if c.startswith("License ::")],
                 "file": next((line.strip() for f in d.files or []
                               if f.name in (m.get_all("License-File") or []) and f.parts[0].endswith(".dist-info")
                               and f.locate().is_file()
                               for line in f.locate().read_text(errors="replace").splitlines() if line.strip()), "")})
print(json.dumps(rows))
"""


@dataclass(frozen=True)
class Distribution:
    """One installed distribution and the licence its metadata states."""

    name: str
    version: str
    licence: str
    source: str
    """Which metadata field said so: ``License-Expression``, ``classifier`` or ``License``."""


def licence_of(row: dict) -> tuple[str, str]:
    """(licence, field it came from) for one distribution's metadata; ``unknown`` when none says."""
    if row["expression"]:
        return row["expression"], "License-Expression"
    named = sorted({SPDX.get(c.lower(), c) for c in row["classifiers"] if c != "OSI Approved"})
    if named:
        return " OR ".join(named), "classifier"
    text = row["license"].strip()
    if text:
        return SPDX.get(text.lower().rstrip("."), text), "License"
    first = row.get("file", "").strip()
    if first.lower() in SPDX:  # only a file that opens with a licence's name; anything else is looked at
        return SPDX[first.lower()], "License-File"
    return "unknown", "none"


def image_licences(image: str, work: Path) -> list[Distribution]:
    """Every distribution in ``image``'s venv (one of :data:`IMAGES`), sorted by name."""
    component, build_args, _ = IMAGES[image]
    built = build_image(component, work, build_args)
    done = subprocess.run([built.python, "-c", _LIST], capture_output=True, text=True, timeout=120, env=built.env)
    assert done.returncode == 0, done.stderr
    found = []
    for row in json.loads(done.stdout):
        licence, source = licence_of(row)
        found.append(Distribution(row["name"], row["version"], licence, source))
    return sorted(found, key=lambda d: d.name.lower())


def forbidden(image: str, found: list[Distribution]) -> list[str]:
    """``name version: licence`` of each distribution under a non-open licence not allowed in ``image``,
    and of each whose metadata states no licence at all (it must be looked at, then allowed or replaced)."""
    return [f"{d.name} {d.version}: {d.licence}" for d in found
            if (NOT_OPEN.search(d.licence) or d.licence == "unknown") and (image, d.name) not in ALLOWED]


def readme_block(found: dict[str, list[Distribution]]) -> str:
    """The README's table: per image, how many distributions under which licences, and the non-open ones."""
    lines = ["<!-- image-licences:start (written by python tests/licences.py --write from each image's "
             "installed metadata; tests/test_image_licences.py checks it) -->",
             "| image | build | distributions | licences (distributions) | BSL, SSPL or commercial |",
             "|---|---|---|---|---|"]
    for image, dists in found.items():
        counts = Counter(d.licence for d in dists)
        summary = ", ".join(f"{name} ({n})" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        closed = [f"**{d.name} {d.version}: {d.licence}**" for d in dists if NOT_OPEN.search(d.licence)]
        lines.append(f"| {image} | {IMAGES[image][2]} | {len(dists)} | {summary} | {', '.join(closed) or 'none'} |")
    lines.append("<!-- image-licences:end -->")
    return "\n".join(lines)


BLOCK = re.compile(r"<!-- image-licences:start.*?<!-- image-licences:end -->", re.DOTALL)


def all_images(work: Path) -> dict[str, list[Distribution]]:
    """:func:`image_licences` of every image in :data:`IMAGES`, in that order."""
    return {image: image_licences(image, work / str(i)) for i, image in enumerate(IMAGES)}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/licences.py --write   (rewrites README.md's image-licences block)")
    readme = REPO / "README.md"
    with tempfile.TemporaryDirectory() as tmp:
        block = readme_block(all_images(Path(tmp)))
    text = readme.read_text()
    assert BLOCK.search(text), "README.md has no image-licences markers"
    readme.write_text(BLOCK.sub(lambda _: block, text))
    print(f"wrote the image-licences block of {readme}")

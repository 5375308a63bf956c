"""Print the image's Python requirements for one variant, derived from pyproject.toml.

    python3 deploy/image/requirements.py cpu|cuda [EXTRAS] > requirements.txt

pyproject.toml installs ``onnxruntime-gpu`` on linux x86_64 (it runs on CPU too) and plain
``onnxruntime`` elsewhere; the markers are exact complements, so never both. An image knows
its variant, so it picks one package and drops the markers of that pair:

- ``cpu``: plain ``onnxruntime``. Its CPU execution provider is the same code as in the GPU
  wheel, but the wheel is about 60 MB installed instead of about 340 MB (the CUDA and TensorRT
  provider libraries alone are 285 MB), and no CUDA provider is probed at start.
- ``cuda``: ``onnxruntime-gpu[cuda,cudnn]``, which pulls CUDA and cuDNN from NVIDIA's wheels,
  so the CUDA image needs no CUDA base image; the Dockerfile registers those libraries with
  ldconfig. The driver (libcuda) comes from the host through the NVIDIA container toolkit.

Every other requirement, with its version bounds and markers, is copied as pyproject states
it, so the image never drifts from the package. EXTRAS is a comma-separated list of the
optional extras to add (e.g. ``mlflow`` for models:/ URIs, ``export`` for first-use export).
Standard library only: it runs on the base image's Python before anything is installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

VARIANTS = {"cpu": "onnxruntime", "cuda": "onnxruntime-gpu"}
CUDA_EXTRAS = "[cuda,cudnn]"
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the package name of {requirement!r}")
    return match.group(1).lower().replace("_", "-")


def requirements(pyproject: dict, variant: str, extras: list[str]) -> list[str]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose from {', '.join(VARIANTS)}")
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise ValueError(f"unknown extras {unknown}: choose from {', '.join(sorted(optional))}")
    wanted = VARIANTS[variant]
    lines: list[str] = []
    found = False
    for req in project["dependencies"]:
        name = _name(req)
        if name not in VARIANTS.values():
            lines.append(req)
            continue
        if name != wanted:
            continue
        found = True
        spec = req.split(";", 1)[0].strip()[len(name) :]
        lines.append(wanted + (CUDA_EXTRAS if variant == "cuda" else "") + spec)
    if not found:
        raise ValueError(f"pyproject.toml has no {wanted} requirement")
    for extra in extras:
        lines.extend(optional[extra])
    return lines


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    extras = [e.strip() for e in (argv[1] if len(argv) == 2 else "").split(",") if e.strip()]
    pyproject = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    try:
        lines = requirements(pyproject, argv[0], extras)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

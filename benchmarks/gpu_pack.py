"""Pack what `benchmarks/gpu.py` needs on a GPU machine without network into one folder.

    python -m benchmarks.gpu_pack [DIR]   (default .gpu; `make gpu-pack`)

The folder holds: `wheels/`, every package textq runs on (the resolved requirements of this
installation, at the versions tested here) for CPython 3.12 on manylinux x86-64, except those
a CUDA machine's image already has (torch, transformers and their kin); `data/`, the corpora
the benchmark reads; `tokenizer/`, the bert-base-uncased tokenizer the models are built with.
The README's "A GPU run" shows how the device command installs and uses them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from benchmarks import data
from benchmarks.run import ROOT

# On the CUDA image already (and too large to carry): the model stack and its kin.
ON_THE_IMAGE = {
    *("torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "hf-xet"),
    *("numpy", "filelock", "fsspec", "regex", "requests", "urllib3", "certifi", "idna"),
    *("charset-normalizer", "tqdm", "pyyaml", "packaging", "jinja2", "markupsafe", "sympy"),
    *("mpmath", "networkx", "setuptools", "triton", "typing-extensions", "psutil"),
}
PLATFORMS = [
    f"manylinux_{n}_x86_64" for n in ("2_28", "2_27", "2_17", "2_24", "2_31", "2_34", "2_35")
] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def closure(roots: list[str]) -> dict[str, str]:
    """Return every distribution the requirements `roots` need here (their extras too),
    name -> installed version."""
    found: dict[str, str] = {}
    todo = [Requirement(root) for root in roots]
    while todo:
        requirement = todo.pop()
        name = normalize(requirement.name)
        if name in found and not requirement.extras:
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an optional need this platform's markers leave out
        for line in metadata.requires(name) or []:
            need = Requirement(line)
            extras = ["", *requirement.extras]
            if need.marker is None or any(need.marker.evaluate({"extra": e}) for e in extras):
                todo.append(need)
    return found


def is_pure(name: str) -> bool:
    """Return whether the installed distribution `name` is pure Python (Root-Is-Purelib)."""
    wheel = metadata.distribution(name).read_text("WHEEL") or ""
    return "Root-Is-Purelib: true" in wheel


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu")
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "wheels").mkdir(parents=True)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {
        name: version
        for name, version in closure(project["dependencies"]).items()
        if name not in ON_THE_IMAGE
    }
    # A package published only as source (rouge-score) has no wheel to download: pure-Python
    # ones are built into a wheel here, which any platform installs.
    pure = {name for name in needed if is_pure(name)}
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    binary = [f"{name}=={version}" for name, version in sorted(needed.items()) if name not in pure]
    built = [f"{name}=={version}" for name, version in sorted(needed.items()) if name in pure]
    if binary:  # pip fails when given no requirement
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
             *platforms, "-d", str(folder / "wheels"), *binary],
            check=True,
        )  # fmt: skip
    if built:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "-w", str(folder / "wheels"), *built],
            check=True,
        )  # fmt: skip
    shutil.copytree(data.DATA_DIR / "sentiment", folder / "data" / "sentiment")
    articles = data.DATA_DIR / "summarization" / "cnndm_test_frank.jsonl"
    (folder / "data" / "summarization").mkdir(parents=True)
    shutil.copy(articles, folder / "data" / "summarization" / articles.name)
    from tests.model_factory import tokenizer

    tokenizer().save_pretrained(folder / "tokenizer")
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    print(f"{folder}: {len(needed)} wheels, corpora and tokenizer, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

"""Cold start: the shared layer's size and each handler module's import time from that layer.

The layer is built by its recipe (``layers/drsentry/Makefile``, what ``sam build`` runs:
the Linux wheels for CPython 3.11 and the package, compiled to unchecked-hash ``.pyc``)
into a temporary directory; its size is measured unzipped and as the zip Lambda receives
(everything under ``python/``).

Each handler (``functions/<name>/app.py``) is then imported by a fresh interpreter that
sees only the standard library, the function's folder and the layer (``python -S``,
``PYTHONPATH``), with the environment a Lambda function of the template has (X-Ray
tracing on, Powertools settings), and the import alone is timed. Two cases:

- ``bytecode``: the layer as built, with its ``.pyc`` files: what the functions import;
- ``source``: a copy without ``.pyc`` files, and none written (the standard library keeps
  its own): what SAM's default Python build (aws-lambda-builders unpacks the wheels
  without compiling them) would ship; ``/opt`` is read-only, so every cold start would
  compile everything it imports from the layer. For comparison only.

    .venv/bin/python infra/bench/cold_start.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "functions"
LAYER_SOURCE = REPO / "layers" / "drsentry"
MiB = 1024 * 1024

# Times only the import of the handler module, after the interpreter itself has started.
IMPORT_SNIPPET = """
import importlib.util, sys, time
path = sys.argv[1]
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("app", path)
module = importlib.util.module_from_spec(spec)
sys.modules["app"] = module
spec.loader.exec_module(module)
assert callable(module.lambda_handler)
print(time.perf_counter() - started)
"""


def handler_names() -> list[str]:
    return sorted(path.parent.name for path in FUNCTIONS.glob("*/app.py"))


def build_layer(into: Path) -> Path:
    """The layer as `sam build` makes it (layers/drsentry/Makefile); returns its `python/` dir."""
    built = subprocess.run(
        ["make", "--no-print-directory", "-C", str(LAYER_SOURCE), "build-DrsentryLayer",
         f"ARTIFACTS_DIR={into}", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(f"building the layer failed:\n{built.stderr[-3000:]}")
    return into / "python"


def _tree_bytes(root: Path, *, with_bytecode: bool = True) -> int:
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and (with_bytecode or path.suffix != ".pyc"):
            total += path.stat().st_size
    return total


def _zipped_bytes(root: Path, workdir: Path, *, with_bytecode: bool) -> int:
    archive = workdir / f"layer-{'pyc' if with_bytecode else 'source'}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(root.rglob("*")):
            if path.is_file() and (with_bytecode or path.suffix != ".pyc"):
                bundle.write(path, Path("python") / path.relative_to(root))
    size = archive.stat().st_size
    archive.unlink()
    return size


def layer_size(layer: Path, workdir: Path) -> dict[str, Any]:
    packages: dict[str, int] = {}
    for entry in layer.iterdir():
        if entry.name.endswith((".dist-info", ".egg-info")):
            continue
        name = entry.name.split(".")[0] if entry.is_file() else entry.name
        size = _tree_bytes(entry) if entry.is_dir() else entry.stat().st_size
        packages[name] = packages.get(name, 0) + size
    largest = dict(sorted(packages.items(), key=lambda item: -item[1])[:8])
    return {
        "unzipped_bytes": _tree_bytes(layer),
        "unzipped_bytes_without_pyc": _tree_bytes(layer, with_bytecode=False),
        "zipped_bytes": _zipped_bytes(layer, workdir, with_bytecode=True),
        "zipped_bytes_without_pyc": _zipped_bytes(layer, workdir, with_bytecode=False),
        "largest_packages_bytes": largest,
        "lambda_limits": {"unzipped_bytes": 250 * MiB, "zipped_direct_upload_bytes": 50 * MiB},
    }


def without_bytecode(layer: Path, into: Path) -> Path:
    """A copy of the layer as `sam build` ships it: sources only."""
    shutil.copytree(layer, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def lambda_environment(name: str, layer: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{FUNCTIONS / name}{os.pathsep}{layer}",
        # What Lambda sets, and the template's Globals: Tracer is active, as with `Tracing: Active`.
        "AWS_LAMBDA_FUNCTION_NAME": f"drsentry-{name}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": str(FUNCTIONS / name),
        "_HANDLER": "app.lambda_handler",
        "DRSENTRY_CONFIG_PARAM": "/drsentry/config",
        "POWERTOOLS_SERVICE_NAME": "drsentry",
        "POWERTOOLS_METRICS_NAMESPACE": "drsentry",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        # Lambda's /opt is read-only; here it keeps the source-only copy source-only.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return env


def import_seconds(name: str, layer: Path, *, importtime: bool = False) -> tuple[float, str]:
    flags = ["-S", *(["-X", "importtime"] if importtime else [])]
    result = subprocess.run(
        [sys.executable, *flags, "-c", IMPORT_SNIPPET, str(FUNCTIONS / name / "app.py")],
        env=lambda_environment(name, layer),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing functions/{name}/app.py failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1]), result.stderr


def heaviest_imports(importtime_log: str, top: int = 8) -> dict[str, float]:
    """Import time (ms) per top-level package, each module's own time counted for its package,
    from `-X importtime` output: where the handler's import time goes."""
    packages: dict[str, float] = {}
    for line in importtime_log.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, _cumulative, name = line.removeprefix("import time:").split("|")
        if own.strip() == "self [us]":
            continue
        package = name.strip().split(".")[0]
        packages[package] = packages.get(package, 0.0) + int(own) / 1000
    ordered = sorted(packages.items(), key=lambda item: -item[1])[:top]
    return {package: round(ms, 1) for package, ms in ordered}


def layer_versions(layer: Path) -> dict[str, str]:
    versions = {}
    for info in layer.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        versions[name.lower()] = version
    return dict(sorted(versions.items()))


def measure(repeat: int, workdir: Path) -> dict[str, Any]:
    layer = build_layer(workdir)
    size = layer_size(layer, workdir)
    layers = {"bytecode": layer, "source": without_bytecode(layer, workdir / "python-source-only")}
    handlers: dict[str, Any] = {}
    names = handler_names()
    for name in names:
        for case_layer in layers.values():
            import_seconds(name, case_layer)  # warm the page cache
    samples: dict[str, dict[str, list[float]]] = {name: {case: [] for case in layers} for name in names}
    for _round in range(repeat):
        for name in names:  # interleaved, so a burst of load hits every handler alike
            for case, case_layer in layers.items():
                seconds, _log = import_seconds(name, case_layer)
                samples[name][case].append(round(seconds, 4))
    for name in names:
        handlers[name] = {
            "import_seconds": samples[name],
            "median_seconds": {case: statistics.median(values) for case, values in samples[name].items()},
            "heaviest_imports_ms": {
                case: heaviest_imports(import_seconds(name, case_layer, importtime=True)[1])
                for case, case_layer in layers.items()
            },
        }
    return {
        "layer": size,
        "layer_versions": layer_versions(layer),
        "handlers": handlers,
        "python": sys.version.split()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drsentry-layer-") as workdir:
        result = measure(args.repeat, Path(workdir))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

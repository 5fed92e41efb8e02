"""The demo ships in the package: scikit-learn stays out of the core, the demo says how to get
it when it is missing, and a wheel installed in a fresh environment serves the demo from an
empty folder."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import REPO, RunningServer, wait_ready
from tests.support import free_port

# The README's order, and the shape of the answer it promises.
README_ORDER = {"order_id": "o-1", "user": {"id": 42, "app_version": "5.12.0"},
                "sub_orders": [{"sub_order_id": "so-1", "product_id": 501, "price": 499.0,
                                "margin": 0.18, "quantity": 1}]}

# Runs in a fresh interpreter: scikit-learn is made unimportable first (a None entry in
# sys.modules makes `import sklearn` raise ModuleNotFoundError, as if it were not installed).
WITHOUT_SKLEARN = "import sys; sys.modules['sklearn'] = None; sys.argv = ['buttress', *{args!r}]\n"
CLI = "from buttress.cli import main; main()"


def run_without_sklearn(*args: str) -> subprocess.CompletedProcess[str]:
    script = WITHOUT_SKLEARN.format(args=list(args)) + CLI
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)


def test_the_core_imports_no_scikit_learn() -> None:
    modules = ("buttress", "buttress.cli.app", "buttress.cli.server", "buttress.http",
               "buttress.runners", "buttress.oip.client", "buttress.demo",
               "buttress.demo.traffic.display")
    script = (f"import sys, {', '.join(modules)}\n"
              "print(sorted(m for m in sys.modules\n"
              "             if m.partition('.')[0] in ('sklearn', 'scipy', 'joblib')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_the_demo_without_scikit_learn_says_what_to_install() -> None:
    result = run_without_sklearn("demo", "--port", "1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "buttress: error: the demo needs scikit-learn: pip install 'buttress[demo]'"]


def test_serving_the_demo_module_without_scikit_learn_names_the_extra() -> None:
    result = run_without_sklearn("serve", "buttress.demo.service:svc", "--port", "1")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("buttress: error: bad target 'buttress.demo.service:svc'")
    assert line.endswith("(the demo needs scikit-learn: pip install 'buttress[demo]')")


def test_the_examples_pointer_serves_the_packaged_demo() -> None:
    from buttress.demo.service import svc
    from examples.discount.service import svc as pointer

    assert pointer is svc


def run(*args: str | Path, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure show everything it printed."""
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (
        f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def package_files(package: Path) -> set[Path]:
    return {p for p in package.rglob("*") if "__pycache__" not in p.parts}


def build_wheel(into: Path, scratch: Path) -> Path:
    """The wheel of this checkout. Built from a copy of the sources: setuptools keeps a build/
    directory next to the sources, and files left there by an older build would be packed.
    With a new enough setuptools at hand it builds offline, without an isolated environment."""
    source = scratch / "source"
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # pyproject.toml's build-system needs setuptools>=77; an older one builds in isolation
    isolation = ["--no-build-isolation"] if _setuptools_major() >= 77 else []
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet", "-w", into,
        source)
    [wheel] = into.glob("buttress-*.whl")
    return wheel


def _setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:  # a venv of Python 3.12+ has none
        return 0


@pytest.mark.slow
def test_the_wheel_carries_the_dashboard_page(tmp_path: Path) -> None:
    """``/dashboard`` serves its files from the installed package: each must be in the wheel."""
    import zipfile

    wheel = build_wheel(tmp_path / "dist", tmp_path)
    static = REPO / "src" / "buttress" / "dashboard" / "static"
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"buttress/dashboard/static/{p.name}" for p in static.iterdir()} <= shipped
    assert "buttress/dashboard/query_worker.py" in shipped


@pytest.mark.slow
def test_the_wheel_serves_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    """pip install the wheel into a new venv: the core alone names the demo extra; with
    ``[demo]``, ``buttress demo`` in an empty folder answers the README's order, with its
    models trained into the user's cache (here a temp one) and nothing written to the venv."""
    wheel = build_wheel(tmp_path / "dist", tmp_path)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python, buttress = venv / "bin" / "python", venv / "bin" / "buttress"
    # Nothing of this checkout or of the test run may leak in: no PYTHONPATH, no settings.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR")
           and not k.startswith("BUTTRESS_")}
    folder = tmp_path / "empty"
    folder.mkdir()

    run(python, "-m", "pip", "install", "--quiet", wheel, env=env)
    core_only = subprocess.run([buttress, "demo", "--port", "1"], cwd=folder, env=env,
                               capture_output=True, text=True, timeout=60)
    assert core_only.returncode == 2
    assert core_only.stderr.splitlines() == [
        "buttress: error: the demo needs scikit-learn and joblib: pip install 'buttress[demo]'"]

    run(python, "-m", "pip", "install", "--quiet", f"{wheel}[demo]", env=env)
    where = run(python, "-c", "import buttress; print(buttress.__file__)", cwd=folder, env=env)
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(venv)
    installed = package_files(package)

    cache = tmp_path / "cache"  # where the demo's models go (XDG_CACHE_HOME), fresh: it trains
    port = free_port()
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [buttress, "demo", "--port", str(port)], cwd=folder,
            env={**env, "XDG_CACHE_HOME": str(cache), "BUTTRESS_LOG_LEVEL": "warning"},
            stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(process, port, folder)
    try:
        wait_ready(server, timeout=300)  # the first start trains both model versions
        response = httpx.post(f"{server.base_url}/predict", json=README_ORDER, timeout=10)
    finally:
        exit_code = server.stop()
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer.keys() == {"order_id", "discounts"}
    assert answer["order_id"] == "o-1"
    [discount] = answer["discounts"]
    assert discount.keys() == {"sub_order_id", "discount_pct"}
    assert discount["sub_order_id"] == "so-1"
    assert isinstance(discount["discount_pct"], float)
    assert exit_code == 0, server.output()
    assert list(cache.glob("buttress/demo-models/*/discount-v1.joblib"))
    assert package_files(package) == installed  # nothing written inside the package
    assert (folder / "var" / "demo-features.db").is_file()

"""The demo ships in the package: scikit-learn stays out of the core, and the demo says how to
get it when it is missing."""

from __future__ import annotations

import subprocess
import sys

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

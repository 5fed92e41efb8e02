"""Find the object a ``TARGET`` names: ``path/to/file.py:name`` or ``package.module:name``.

Used by ``buttress serve`` (a Service) and ``buttress features load --table`` (a FeatureTable).
A file inside a package is imported under its dotted name from the package's parent
directory, so it can import its siblings (``shop/discounts/service.py`` may import
``shop.discounts.data``), and two targets in one file share one module.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path


class TargetError(ValueError):
    """The TARGET cannot be loaded; the message says why in one line."""


def _module_name_for(path: Path) -> tuple[str, Path]:
    """Dotted module name of ``path`` and the directory to import it from (the first parent
    that is not a package)."""
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def load_object(target: str) -> object:
    module_ref, sep, attr = target.rpartition(":")
    if not sep or not module_ref or not attr:
        raise TargetError(f"bad target {target!r}: expected 'path/to/file.py:name' "
                          "or 'package.module:name'")
    if module_ref.endswith(".py") or "/" in module_ref:
        path = Path(module_ref).resolve()
        if not path.is_file():
            raise TargetError(f"bad target {target!r}: file {module_ref} does not exist")
        module_name, root = _module_name_for(path)
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    else:
        module_name = module_ref
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise TargetError(f"bad target {target!r}: cannot import {module_name} ({error})") from None
    found: object = module
    for part in attr.split("."):
        if not hasattr(found, part):
            raise TargetError(f"bad target {target!r}: {module_name} has no attribute {attr!r}")
        found = getattr(found, part)
    return found

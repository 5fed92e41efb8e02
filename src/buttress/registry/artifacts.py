"""Artifacts on disk: ``<models_dir>/<name>/<version>/model.<ext>``, with their SHA-256.

A registered artifact is immutable: it is copied (never moved or linked, so editing the
original later changes nothing served) into a temporary file next to its final place, hashed
while copying, and renamed into place. The record keeps a path *relative* to the models
directory, so the directory may move, and an object store can later take its place behind the
same two calls.

Reading for a load returns the verified bytes themselves: the loaders build the model from
those bytes, not from the path, so a file swapped between the check and the load (a TOCTOU
race) cannot slip through.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from buttress.registry.errors import ArtifactMissing, ChecksumMismatch, VersionExists
from buttress.registry.records import ModelVersion

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, name: str, version: str, source: Path, extension: str) -> tuple[str, str, int]:
        """Copy ``source`` in; returns its relative path, SHA-256 and size in bytes."""
        if not source.is_file():
            raise FileNotFoundError(f"{source} is not a file")
        relative = f"{name}/{version}/model.{extension}"
        target = self.root / relative
        if target.parent.exists():
            raise VersionExists(f"{target.parent} already exists: a version is written once "
                                "(remove the directory if it is left from a failed attempt)")
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent.parent))
        try:
            digest = hashlib.sha256()
            with source.open("rb") as src, (staging / target.name).open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            size = (staging / target.name).stat().st_size
            try:
                staging.rename(target.parent)
            except OSError as error:  # another registration took this version meanwhile
                if target.parent.exists():
                    raise VersionExists(f"{target.parent} already exists: a version is "
                                        "written once") from error
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return relative, digest.hexdigest(), size

    def remove(self, record_path: str) -> None:
        """Undo a ``put`` whose registration failed afterwards."""
        shutil.rmtree((self.root / record_path).parent, ignore_errors=True)

    def path_of(self, record: ModelVersion) -> Path:
        return self.root / record.path

    def read_verified(self, record: ModelVersion) -> bytes:
        """The artifact's bytes, only if their SHA-256 is the registered one."""
        path = self.path_of(record)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(
                f"{record.name} {record.version}: artifact {path} is missing") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != record.sha256:
            raise ChecksumMismatch(
                f"{record.name} {record.version}: {path} has SHA-256 {actual[:16]}…, "
                f"registered {record.sha256[:16]}…; refusing to load it")
        return data

"""``/admin/models``: list, promote and roll back through the real ASGI app, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import buttress as bt
from buttress.http.app import create_app
from buttress.pipeline.runtime import Runtime
from buttress.registry import Registry
from tests.model_files import lightgbm_file
from tests.support import free_port

TOKEN = "models-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


class Rows(bt.Input):
    values: list[float]


def make_service() -> bt.Service:
    svc = bt.Service("admin-models", input=Rows)

    @svc.model(model=lambda rows: np.asarray(rows).sum(axis=1), version="v1", timeout="1s",
               fallback=-1.0)
    def scorer(rows: Rows) -> np.ndarray:
        return np.asarray([rows.values])

    @svc.respond
    def respond(rows: Rows, scorer: np.ndarray) -> dict[str, float]:
        return {"score": float(np.asarray(scorer).ravel()[0])}

    return svc


@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[
        tuple[Runtime, httpx.AsyncClient]]:
    values: dict[str, Any] = {
        "events_dir": str(tmp_path / "events"), "admin_token": TOKEN,
        "registry_url": f"sqlite:///{tmp_path}/registry.db",
        "models_dir": str(tmp_path / "models"), **settings}
    runtime = make_service().build(bt.Settings(**values))
    app = create_app(runtime)
    await runtime.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://buttress") as client:
            yield runtime, client
    finally:
        await runtime.stop()
        await app.routes.state.registry.aclose()


@pytest.fixture
async def registered(tmp_path: Path) -> AsyncIterator[Registry]:
    """``discount`` v1..v3 registered, v1 then v2 promoted, in the registry the app uses."""
    async with Registry(f"sqlite:///{tmp_path}/registry.db",
                        models_dir=tmp_path / "models") as registry:
        artifact = lightgbm_file(tmp_path)
        for _ in range(3):
            await registry.register("discount", artifact, who="alice")
        for version in ("v1", "v2"):
            await registry.promote("discount", version, who="alice")
        yield registry


async def test_model_routes_need_the_admin_token(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, client):
        assert (await client.get("/admin/models")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        response = await client.post("/admin/models/discount/rollback", headers=wrong)
        assert response.status_code == 401
    async with serving(tmp_path, admin_token=None) as (_, client):
        assert (await client.get("/admin/models", headers=ADMIN)).status_code == 404


async def test_get_models_lists_aliases_versions_and_serving_replicas(
        tmp_path: Path, registered: Registry) -> None:
    await registered.report_serving("replica-a", "discount", "v2")
    async with serving(tmp_path) as (_, client):
        response = await client.get("/admin/models", headers=ADMIN)
    assert response.status_code == 200
    [model] = response.json()["models"]
    assert model["aliases"] == {"stable": "v2", "previous": "v1", "candidate": "v3"}
    assert [v["version"] for v in model["versions"]] == ["v1", "v2", "v3"]
    assert len(model["versions"][0]["sha256"]) == 64
    assert [s["replica"] for s in model["serving"]] == ["replica-a"]


async def test_promote_and_rollback_are_audited_and_counted(
        tmp_path: Path, registered: Registry) -> None:
    async with serving(tmp_path) as (runtime, client):
        promoted = await client.post("/admin/models/discount/promote", headers=ADMIN,
                                     json={"version": "v3", "reason": "better AUC"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json() | {"revision": 0} == {
            "model": "discount", "action": "promote", "changed": True, "alias": "stable",
            "from": "v2", "to": "v3", "who": "admin@127.0.0.1", "why": "better AUC",
            "revision": 0}
        again = await client.post("/admin/models/discount/promote", headers=ADMIN,
                                  json={"version": "v3"})
        assert again.json()["changed"] is False
        rolled = await client.post("/admin/models/discount/rollback",
                                   headers={**ADMIN, "X-Buttress-Actor": "release-bot"},
                                   json={"reason": "conversion fell"})
        assert rolled.status_code == 200, rolled.text
        assert (rolled.json()["from"], rolled.json()["to"]) == ("v3", "v2")
        bare = await client.post("/admin/models/discount/rollback", headers=ADMIN)
        assert (bare.status_code, bare.json()["to"]) == (200, "v1")

        def changes(action: str) -> float | None:
            return runtime.metrics.registry.get_sample_value(
                "buttress_model_changes_total",
                {"service": "admin-models", "model": "discount", "action": action})

        assert (changes("promote"), changes("rollback")) == (1.0, 2.0)
    history = await registered.history("discount", limit=3)
    assert [(c.action, c.who, c.why) for c in history] == [
        ("promote", "admin@127.0.0.1", "better AUC"),
        ("rollback", "release-bot@127.0.0.1", "conversion fell"),
        ("rollback", "admin@127.0.0.1", ""),
    ]
    assert (await registered.state("discount")).aliases["stable"] == "v1"


async def test_errors_are_404_409_and_400(tmp_path: Path, registered: Registry) -> None:
    async with serving(tmp_path) as (_, client):
        async def post(path: str, **kwargs: Any) -> httpx.Response:
            return await client.post(path, headers=ADMIN, **kwargs)

        unknown = await post("/admin/models/pricing/promote", json={"version": "v1"})
        assert unknown.status_code == 404
        assert "no model named 'pricing'" in unknown.json()["error"]["message"]
        assert (await post("/admin/models/discount/promote",
                           json={"version": "v9"})).status_code == 404
        assert (await post("/admin/models/pricing/rollback")).status_code == 404
        for body in (b"[1]", b"{", b'{"version": 2}', b'{"version": "v1", "reason": 5}'):
            assert (await post("/admin/models/discount/promote",
                               content=body)).status_code == 400
        assert (await post("/admin/models/discount/rollback")).status_code == 200
        nothing = await post("/admin/models/discount/rollback")
        assert nothing.status_code == 409
        assert "no earlier stable version" in nothing.json()["error"]["message"]


async def test_an_unreachable_registry_is_503(tmp_path: Path) -> None:
    async with serving(tmp_path, registry_url=f"redis://127.0.0.1:{free_port()}/0") as (
            _, client):
        listed = await client.get("/admin/models", headers=ADMIN)
        assert listed.status_code == 503
        assert listed.json()["error"]["message"].startswith("registry unavailable")
        promoted = await client.post("/admin/models/discount/promote", headers=ADMIN,
                                     json={"version": "v1"})
        assert promoted.status_code == 503

"""A service whose failures are chosen by the request, so server tests need no extra endpoints.

``mode`` picks the fault: ``model-raise`` (the ``scorer`` model raises), ``stage-fail`` (the
``gate`` stage, which has no fallback, raises: 503), ``trip`` (the ``guarded`` model waits
200 ms, then raises; its breaker opens after 3 failures and stays open 0.5 s).
``sleep_ms`` makes the ``wait`` stage sleep (bounded only by the request deadline) and
``model_sleep_ms`` makes the ``scorer`` model sleep in its thread (its timeout is 150 ms).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

import buttress as bt

SCORER_TIMEOUT = 0.15
GUARDED_OPEN_FOR = 0.5
GUARDED_FAILURES = 3
TRIP_DELAY = 0.2


class Probe(bt.Input):
    id: str
    mode: str = "ok"
    sleep_ms: float = 0.0
    model_sleep_ms: float = 0.0


class Answer(bt.Output):
    id: str
    waited: float
    score: float
    guarded: float


svc = bt.Service("faulty", input=Probe, output=Answer, example={"id": "warm-up"})


@svc.stage(fallback=-1.0, category=bt.Category.FEATURES_UNAVAILABLE, breaker=None)
async def wait(probe: Probe) -> float:
    await asyncio.sleep(probe.sleep_ms / 1000)
    return probe.sleep_ms


@svc.stage(breaker=None)
def gate(probe: Probe) -> bool:
    if probe.mode == "stage-fail":
        raise RuntimeError("injected failure of a stage without fallback")
    return True


def score(rows: np.ndarray) -> np.ndarray:
    raise_flag, sleep_ms = rows[0]
    if raise_flag:
        raise RuntimeError("injected model failure")
    time.sleep(sleep_ms / 1000)
    return np.ones(len(rows))


@svc.model(model=score, version="v1", timeout=SCORER_TIMEOUT, fallback=-1.0, breaker=None)
def scorer(probe: Probe) -> np.ndarray:
    return np.array([[probe.mode == "model-raise", probe.model_sleep_ms]], dtype=np.float64)


def guard(rows: np.ndarray) -> np.ndarray:
    if rows[0][0]:
        time.sleep(TRIP_DELAY)
        raise RuntimeError("injected failure of the guarded model")
    return np.full(len(rows), 2.0)


@svc.model(model=guard, version="v7", timeout="1s", fallback=-1.0,
           breaker=bt.Breaker(consecutive_failures=GUARDED_FAILURES, open_for=GUARDED_OPEN_FOR))
def guarded(probe: Probe) -> np.ndarray:
    return np.array([[probe.mode == "trip"]], dtype=np.float64)


@svc.respond
def respond(probe: Probe, wait: float, gate: bool, scorer: np.ndarray,
            guarded: np.ndarray) -> Answer:
    return Answer(id=probe.id, waited=wait, score=float(np.asarray(scorer).ravel()[0]),
                  guarded=float(np.asarray(guarded).ravel()[0]))

"""A service as a user running ``mypy --strict`` writes it: decorators keep types."""

import buttress as bt


class Order(bt.Input):
    user_id: int


class Answer(bt.Output):
    score: float


svc = bt.Service("strict", input=Order, output=Answer)


@svc.stage(timeout="50ms", fallback={})
async def features(order: Order) -> dict[str, float]:
    return {"x": 1.0}


@svc.stage
def plain(order: Order) -> int:
    return order.user_id


@svc.model(model=lambda rows: rows, version="v1")
def rows(order: Order, features: dict[str, float]) -> list[list[float]]:
    return [[features["x"]]]


@svc.respond
def respond(order: Order, rows: list[float]) -> Answer:
    return Answer(score=float(rows[0]))


n: int = plain(Order(user_id=1))

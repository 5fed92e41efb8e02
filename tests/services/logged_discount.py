"""The discount demo with a prediction summary on each event, as the demo declares it.

The insights and alert tests query these summaries (``prediction.mean_discount_pct``...).
"""

from __future__ import annotations

from typing import Any

from examples.discount.service import Discounts, Order, discount_value, svc

__all__ = ["svc"]


@svc.log_prediction
def summary(order: Order, response: Discounts | None) -> dict[str, Any]:
    """Order value, sub-orders, discount handed out and the user's app version."""
    pcts = [d.discount_pct for d in response.discounts] if response is not None else []
    return {
        "order_value": round(sum(s.price * s.quantity for s in order.sub_orders), 2),
        "sub_orders": len(order.sub_orders),
        "discount_value": (round(discount_value(order, response), 2)
                           if response is not None else None),
        "mean_discount_pct": round(sum(pcts) / len(pcts), 3) if pcts else None,
        "app_version": order.user.app_version,
    }

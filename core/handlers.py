"""The kernel's command handlers: recording orders and their lifecycle in the event store.

Outer tiers extend the table (risk checks, exchange submission) in their own bootstrap; these handlers are
the part every tier shares: idempotent order placement and cancellation, written through the unit of work.
"""

from __future__ import annotations

from core.domain.messages import Command, DomainError, new_id
from core.domain.orders import CancelOrder, Order, PlaceOrder
from core.messaging.bus import CommandHandler
from core.uow import DuplicateClientOrderId, UnitOfWork


class OrderNotFound(DomainError):
    pass


async def place_order(command: PlaceOrder, uow: UnitOfWork) -> str:
    """Record a new order; the same client order id on the same account returns the existing order's id.

    No look-up first: the unique (account, client order id) constraint decides, which keeps the common path
    at one round trip and makes concurrent duplicates safe.
    """
    order = Order.place(command, order_id=str(new_id()))
    uow.orders.add(order)
    try:
        await uow.commit()
    except DuplicateClientOrderId:
        # The same client order id was placed before (or concurrently): answer with that order.
        winner = await uow.orders.id_by_client_order_id(command.account_id, command.client_order_id)
        if winner is None:
            raise
        return winner
    return order.id


async def cancel_order(command: CancelOrder, uow: UnitOfWork) -> str:
    """Cancel an order that has not reached a terminal state (owner checked)."""
    order = await uow.orders.get(command.order_id)
    if order is None or order.user_id != command.user_id:
        raise OrderNotFound(f"order {command.order_id} not found")
    order.cancel(reason=command.reason, correlation_id=command.correlation_id, causation_id=str(command.command_id))
    await uow.commit()
    return order.status.value


COMMAND_HANDLERS: dict[type[Command], CommandHandler] = {
    PlaceOrder: place_order,
    CancelOrder: cancel_order,
}

"""Domain events and the bus that carries them between processes."""

from hostplane.core.events.bus import Event, EventBus, Subscription, create_bus

__all__ = ["Event", "EventBus", "Subscription", "create_bus"]

"""The notifier: owns the MQTT broker connection and drains the store's event outbox."""

from notify.publisher import NotifierState, OutboxPublisher

__all__ = ["NotifierState", "OutboxPublisher"]

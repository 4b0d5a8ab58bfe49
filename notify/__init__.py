"""The notifier: owns the MQTT broker connection and drains the store's event outbox."""

from notify.publisher import BrokerSettings, OutboxPublisher

__all__ = ["BrokerSettings", "OutboxPublisher"]

"""The notifier: owns the MQTT broker connection and drains the store's event outbox."""

from notify.publisher import BrokerSettings, NotifierState, OutboxPublisher

__all__ = ["BrokerSettings", "NotifierState", "OutboxPublisher"]

"""The change events recorded with each mutation, as MQTT consumers receive them.

The ``message`` sentences are exactly the Go original's notifications.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

# An event's fields, as published (strings and numbers).
Event = dict[str, str | int]

if TYPE_CHECKING:
    from store.ports import ImageRecord


def album_created(album: str) -> Event:
    return {"event": "album.created", "album": album, "message": f"{album} album created"}


def album_deleted(album: str) -> Event:
    return {"event": "album.deleted", "album": album, "message": f"{album} album deleted"}


def album_renamed(old: str, new: str) -> Event:
    return {
        "event": "album.renamed",
        "album": new,
        "from": old,
        "message": f"{old} album modified to {new}",
    }


def image_added(record: "ImageRecord") -> Event:
    event: Event = {
        "event": "image.added",
        "album": record.album,
        "image": record.name,
        "message": f"{record.name} image added to album {record.album}",
        "size": record.size,
        "sha256": record.sha256,
        "contentType": record.content_type,
    }
    # Known when libvips read the header (not for BMP or ICO, say).
    if record.width is not None and record.height is not None:
        event["width"] = record.width
        event["height"] = record.height
    return event


def image_deleted(album: str, image: str) -> Event:
    return {
        "event": "image.deleted",
        "album": album,
        "image": image,
        "message": f"{image} image deleted from album {album}",
    }


def image_renamed(album: str, old: str, new: str) -> Event:
    return {
        "event": "image.renamed",
        "album": album,
        "image": new,
        "from": old,
        "message": f"{old} image modified to {new}",
    }


def encode(event: Event) -> str:
    """The stored form: the event with its time, without its id (known only once stored)."""
    now = datetime.now(UTC)
    stamped = {
        **event,
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
    }
    return json.dumps(stamped, ensure_ascii=False, separators=(",", ":"))


def with_id(event_id: int, stored: str) -> bytes:
    """The published form: the id first, then the stored fields."""
    return f'{{"id":{event_id},{stored[1:]}'.encode()


@dataclass(frozen=True)
class OutboxEvent:
    """One outbox row, in both published forms: the JSON event with its id, and the
    bare sentence, byte for byte the Go service's notification."""

    id: int
    json: bytes
    sentence: bytes

    @classmethod
    def from_row(cls, event_id: int, stored: str) -> "OutboxEvent":
        message = json.loads(stored)["message"]
        return cls(event_id, with_id(event_id, stored), message.encode("utf-8"))

"""/api/v1/albums and /api/v1/albums/{album}."""

from handlers.base import APIHandler


class AlbumsHandler(APIHandler):
    async def get(self) -> None:
        self.write_json({"albumList": await self.store.list_albums()})

    async def post(self) -> None:
        album = await self.store.create_album(self.json_body("albumName"))
        self.write_json({"message": f"{album} album added"})


class AlbumHandler(APIHandler):
    async def delete(self, album: str) -> None:
        album = await self.store.delete_album(album)
        self.write_json({"message": f"{album} album deleted"})

    async def patch(self, album: str) -> None:
        old, new = await self.store.rename_album(album, self.json_body("albumName"))
        self.write_json({"message": f"album {old} modified to {new}"})

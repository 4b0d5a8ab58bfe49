"""/api/v1/albums and /api/v1/albums/{album}."""

from handlers.base import APIHandler


class AlbumsHandler(APIHandler):
    async def get(self) -> None:
        """List the albums.
        ---
        summary: List the albums, sorted by name
        tags: [albums]
        parameters:
          - {name: If-None-Match, in: header, required: false, schema: {type: string},
             description: "The list's ETag from an earlier answer: 304 while unchanged"}
        responses:
          200:
            description: Every album's name.
            headers:
              ETag: {description: "Changes when the list does.", schema: {type: string}}
            content:
              application/json:
                schema: {$ref: "#/components/schemas/AlbumList"}
          304: {description: "Unchanged since the ETag given in If-None-Match."}
          503: {$ref: "#/components/responses/Unavailable"}
        """
        await self.write_list(("albums",), "albumList", self.store.list_albums)

    async def post(self) -> None:
        """Create an album.
        ---
        summary: Create an album
        tags: [albums]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/AlbumName"}
        responses:
          200:
            description: 'Created: "{album} album added".'
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Message"}
          400: {$ref: "#/components/responses/BadRequest"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/TooLarge"}
          503: {$ref: "#/components/responses/Unavailable"}
          507: {$ref: "#/components/responses/StorageFull"}
        """
        album = await self.store.create_album(self.json_body("albumName"))
        self.write_json({"message": f"{album} album added"})


class AlbumHandler(APIHandler):
    async def delete(self, album: str) -> None:
        """Delete an album and its images.
        ---
        summary: Delete an album and all its images
        tags: [albums]
        responses:
          200:
            description: 'Deleted: "{album} album deleted".'
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Message"}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          413: {$ref: "#/components/responses/TooLarge"}
          503: {$ref: "#/components/responses/Unavailable"}
          507: {$ref: "#/components/responses/StorageFull"}
        """
        album = await self.store.delete_album(album)
        self.write_json({"message": f"{album} album deleted"})

    async def patch(self, album: str) -> None:
        """Rename an album.
        ---
        summary: Rename an album (its images follow; nothing is copied)
        tags: [albums]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/AlbumName"}
        responses:
          200:
            description: 'Renamed: "album {old} modified to {new}".'
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Message"}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/TooLarge"}
          503: {$ref: "#/components/responses/Unavailable"}
          507: {$ref: "#/components/responses/StorageFull"}
        """
        old, new = await self.store.rename_album(album, self.json_body("albumName"))
        self.write_json({"message": f"album {old} modified to {new}"})

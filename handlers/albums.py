"""/api/v1/albums and /api/v1/albums/{album}."""

from typing import Any

from handlers.base import APIHandler
from handlers.lists import ListQuery, album_item, page_body


class AlbumsHandler(APIHandler):
    async def get(self) -> None:
        """List the albums.
        ---
        summary: List the albums, sorted by name (whole, or a page at a time)
        tags: [albums]
        parameters:
          - Limit
          - After
          - Prefix
          - Detail
          - {name: If-None-Match, in: header, required: false, schema: {type: string},
             description: "The list's ETag from an earlier answer: 304 while unchanged"}
        responses:
          200:
            description: >-
              Every album's name (without limit, after and detail: the Go service's
              answer), or one page of names or, with detail=true, of objects.
            headers:
              ETag: {description: "Changes when the list does.", schema: {type: string}}
              Link: NextLink
            content:
              application/json:
                schema: {$ref: "#/components/schemas/AlbumList"}
          304: {description: "Unchanged since the ETag given in If-None-Match."}
          400: {$ref: "#/components/responses/BadRequest"}
          503: {$ref: "#/components/responses/Unavailable"}
        """
        query = ListQuery.parse(self.list_argument)

        async def produce() -> tuple[dict[str, Any], str | None]:
            if not query.paged and not query.page.prefix:
                return {"albumList": await self.store.list_albums()}, None
            page = await self.store.album_page(query.page)
            link = query.next_link(self.request.path, page.next_after)
            return page_body("albumList", page, query, album_item), link

        await self.write_list(("albums", *query.cache_key), produce)

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

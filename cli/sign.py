"""`imagestore sign URL`: print URL signed for renditions of any size.

  imagestore sign 'http://host:3333/api/v1/albums/pets/images/cat.jpg?width=300'
  imagestore sign --expires-in 3600 /api/v1/albums/pets/images/cat.jpg?width=300

The key is IMAGESTORE_URL_SIGNING_KEY's first (or --url-signing-key's), as the service
reads it: the service verifies with any of its keys.
"""

import argparse
import os
import sys
import time
from urllib.parse import urlsplit

from settings import parse_api_keys
from store.signing import sign_url

DEFAULT_LIFETIME_SECONDS = 7 * 24 * 3600


def sign_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imagestore sign",
        description="Print URL with expires= and signature= added: a rendition URL "
        "that may ask any width and height (IMAGESTORE_RENDITION_WIDTHS aside). Signed "
        "with the first key of IMAGESTORE_URL_SIGNING_KEY.",
    )
    parser.add_argument("url", help="the rendition URL, absolute or from /api/v1 on")
    parser.add_argument(
        "--expires-in",
        type=int,
        default=DEFAULT_LIFETIME_SECONDS,
        metavar="SECONDS",
        help=f"how long the URL stays valid [default: {DEFAULT_LIFETIME_SECONDS}: a week]",
    )
    parser.add_argument(
        "--url-signing-key",
        metavar="KEYS",
        help="the keys (as IMAGESTORE_URL_SIGNING_KEY: comma-separated or @file)",
    )
    options = parser.parse_args(argv)
    given = options.url_signing_key or os.environ.get("IMAGESTORE_URL_SIGNING_KEY", "")
    try:
        keys = parse_api_keys(given)
    except argparse.ArgumentTypeError as err:
        parser.error(f"IMAGESTORE_URL_SIGNING_KEY {err}")
    if not keys:
        parser.error("no key: set IMAGESTORE_URL_SIGNING_KEY (or give --url-signing-key)")
    if not urlsplit(options.url).path.startswith("/"):
        parser.error("give the URL with its path, e.g. /api/v1/albums/a/images/b.jpg?width=300")
    if options.expires_in < 1:
        parser.error("--expires-in is a number of seconds above 0")
    print(sign_url(options.url, keys[0].encode(), int(time.time()) + options.expires_in))
    return 0


if __name__ == "__main__":
    sys.exit(sign_command(sys.argv[1:]))

"""What push, pull and ls share: the service's URL and key, jobs, retries, conflicts."""

import argparse
import os
from collections.abc import Mapping

from cli.client import Backoff, ServiceClient, api_base
from cli.report import Report

DEFAULT_URL = "http://127.0.0.1:3333"
CONFLICT_POLICIES = ("skip", "rename", "fail")


def add_service_options(parser: argparse.ArgumentParser, transfers: bool) -> None:
    # No default shown for --key: its value is never printed, not even by --help.
    parser.add_argument(
        "--url",
        help=f"the service, e.g. http://host:3333 [IMAGESTORE_URL, else {DEFAULT_URL}]",
    )
    parser.add_argument(
        "--key",
        help="an API key [IMAGESTORE_KEY; prefer it: a command line is visible to other "
        "users of the machine]",
    )
    parser.add_argument("--jobs", type=int, default=4, help="requests at once [4]")
    parser.add_argument(
        "--retries",
        type=int,
        default=6,
        help="retries of a request on 503/429 or a connection failure, with backoff [6]",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also say each retry the service asked for"
    )
    if transfers:
        parser.add_argument(
            "--on-conflict",
            choices=CONFLICT_POLICIES,
            default="fail",
            help="when a name is taken by other bytes: leave it alone (skip), send or "
            'write under the next free "name (N).ext" (rename), or count the file as '
            "failed (fail) [fail]",
        )


def check_service_options(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    if not 1 <= options.jobs <= 64:
        parser.error("--jobs is a number from 1 to 64")
    if not 0 <= options.retries <= 100:
        parser.error("--retries is a number from 0 to 100")
    options.url = options.url or os.environ.get("IMAGESTORE_URL") or DEFAULT_URL
    try:
        api_base(options.url)
    except ValueError as err:
        parser.error(str(err))


def service_client(
    options: argparse.Namespace, report: Report | None, env: Mapping[str, str] = os.environ
) -> ServiceClient:
    def on_retry(line: str, connection: bool) -> None:
        if report is not None and (connection or options.verbose):
            report.note(line)

    return ServiceClient(
        options.url,
        options.key or env.get("IMAGESTORE_KEY") or None,
        options.jobs,
        Backoff(retries=options.retries),
        on_retry,
    )

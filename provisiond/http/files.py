"""Static boot assets with HTTP Range support, handed to the WSGI server's file_wrapper.

Flask's send_file wraps a Range in an iterator (the server's file_wrapper is lost).
Here the file is positioned at the range start and wrapped in `wsgi.file_wrapper` with an
exact Content-Length, which waitress (like gunicorn) stops at, so a range is never read
past its end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flask import Response, abort, request
from werkzeug.http import http_date, parse_range_header


def send_asset(path: Path, mimetype: str = "application/octet-stream") -> Response:
    """Serve a whole file (200) or one byte range (206); 416 for a range outside the file."""
    try:
        handle = path.open("rb")
    except OSError:
        abort(404, description=f"boot asset {path.name} is not available on this server "
                               "(check the [os.*]/[loaders] paths in provisiond.toml)")
    stat = os.fstat(handle.fileno())
    size = stat.st_size
    etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": http_date(stat.st_mtime)}
    start, length, status = 0, size, 200
    header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if header and (if_range is None or if_range == etag):
        ranges = parse_range_header(header)
        # One range is what boot loaders and curl ask for; several (rare) get the whole file.
        if ranges is not None and len(ranges.ranges) == 1:
            bounds = ranges.range_for_length(size)
            if bounds is None:
                handle.close()
                return Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
            start, stop = bounds
            length, status = stop - start, 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    handle.seek(start)
    wrapper = request.environ.get("wsgi.file_wrapper")
    # A generic file_wrapper reads to EOF; waitress's and gunicorn's stop at Content-Length.
    exact = start + length == size or request.environ.get("SERVER_SOFTWARE", "").startswith(
        ("waitress", "gunicorn"))
    body = wrapper(handle, 1 << 20) if wrapper and exact else _chunks(handle, length)
    response = Response(body, status=status, mimetype=mimetype, headers=headers,
                        direct_passthrough=True)
    response.content_length = length
    return response


def _chunks(handle: BinaryIO, length: int) -> Iterator[bytes]:
    """Fallback for WSGI servers without file_wrapper: read the range in 1 MiB pieces."""
    try:
        while length > 0:
            data = handle.read(min(length, 1 << 20))
            if not data:
                break
            length -= len(data)
            yield data
    finally:
        handle.close()

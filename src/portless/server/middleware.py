"""Request ids and error shaping for every HTTP response.

Every response carries `x-amzn-RequestId`.  An AwsError becomes the AWS error
shape (`__type`, `message`) with its status; anything unexpected is logged and
answered as InternalServerError (500) — never a stack trace to the client.
The MGS REST paths answer errors as XML text, which is what the agent reads.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from portless.aws.awsjson import CONTENT_TYPE
from portless.aws.errors import AwsError, internal_server_error, unknown_operation

log = logging.getLogger(__name__)

REQUEST_ID: Any = (web.RequestKey("portless_request_id", str) if hasattr(web, "RequestKey")
                   else "portless_request_id")
"""Request storage key of the request id (a RequestKey where aiohttp has them)."""
MGS_PREFIX = "/v1/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mgs_error(error: AwsError, request_id: str) -> web.Response:
    code = escape(error.code)
    body = f"<{code}><Message>{escape(error.message)}</Message></{code}>"
    return web.Response(text=body, status=error.status, content_type="application/xml",
                        headers={"x-amzn-RequestId": request_id,
                                 "x-amzn-ErrorType": error.code})


def aws_error(error: AwsError, request_id: str) -> web.Response:
    return web.Response(body=error.to_json(), status=error.status,
                        headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id,
                                 "x-amzn-ErrorType": error.code})


def _shape(request: web.Request, error: AwsError, request_id: str) -> web.Response:
    if request.path.startswith(MGS_PREFIX):
        return mgs_error(error, request_id)
    return aws_error(error, request_id)


@web.middleware
async def aws_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except AwsError as exc:
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return _shape(request, exc, request_id)
    except web.HTTPNotFound:
        return _shape(request, AwsError("UnknownOperationException",
                                        f"No route for {request.method} {request.path}", 404),
                      request_id)
    except web.HTTPMethodNotAllowed:
        return _shape(request, AwsError("UnknownOperationException",
                                        f"Method {request.method} is not allowed here", 405),
                      request_id)
    except web.HTTPException as exc:
        exc.headers["x-amzn-RequestId"] = request_id
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return _shape(request, internal_server_error(), request_id)
    if not response.prepared:
        response.headers.setdefault("x-amzn-RequestId", request_id)
    return response


__all__ = ["REQUEST_ID", "aws_error", "aws_errors", "mgs_error", "unknown_operation"]

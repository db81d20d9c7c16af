"""The floor of a Python HTTP service (compare_http.py): a bare ASGI app on
uvicorn with httptools and uvloop that reads the request body and answers
``202 Accepted`` with no body; nothing is parsed, validated or kept.

    python benchmarks/peers/http_floor.py PORT
"""

import signal
import sys

import uvicorn

ACCEPTED = {"type": "http.response.start", "status": 202,
            "headers": [(b"content-length", b"0")]}
EMPTY = {"type": "http.response.body", "body": b""}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(ACCEPTED)
    await send(EMPTY)


def die_with_parent():
    """Linux: SIGTERM when the benchmark script that started us exits."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    die_with_parent()
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="off")

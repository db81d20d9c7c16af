"""What a Python user would write (compare_http.py): FastAPI on uvicorn
(httptools, uvloop), the CloudEvent a pydantic model that FastAPI parses and
validates from the JSON body, ``202 Accepted`` with no body; the event is
not routed or kept.

``POST /events/<subject>``: one structured event
(``application/cloudevents+json``); ``POST /batch/<subject>``: a JSON array of
events (``application/cloudevents-batch+json``).

    python benchmarks/peers/http_fastapi.py PORT
"""

import sys
from typing import Any, Literal, Optional

import uvicorn
from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict

from http_floor import die_with_parent


class CloudEvent(BaseModel):
    """CloudEvents 1.0, JSON format: the required attributes, the optional
    ones, ``data`` or ``data_base64``; extensions are kept as extra members."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str
    source: str
    type: str
    time: Optional[str] = None
    subject: Optional[str] = None
    datacontenttype: Optional[str] = None
    dataschema: Optional[str] = None
    data: Any = None
    data_base64: Optional[str] = None


app = FastAPI()


@app.post("/events/{subject}", status_code=202)
async def publish(subject: str, event: CloudEvent):
    return Response(status_code=202)


@app.post("/batch/{subject}", status_code=202)
async def publish_batch(subject: str, events: list[CloudEvent]):
    return Response(status_code=202)


if __name__ == "__main__":
    die_with_parent()
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="off")

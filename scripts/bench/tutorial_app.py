"""The Python side of scripts/bench-overhead: the StatsD tutorial's API on
FastAPI + uvicorn + pystatsd, so the Rust version can be compared with it.

Behaviour (the same as example-api):
  GET /?msg=Hello+world  -> {"message": "Hello world"}; no msg -> "No message provided!".
                            Counts `root.called`, times the handler as `root`, and
                            sleeps a random 0..DEMO_MAX_DELAY_MS ms first (default 500;
                            0 = no sleep, as in the benchmark).
  GET /user?id=123       -> {"id": 123}, and adds the id to the set `user`.
                            A non-integer id is rejected by FastAPI (422), with no set entry.

pystatsd is configured from the environment (STATSD_HOST, STATSD_PORT,
STATSD_PREFIX; the prefix defaults to `statstest` here). The handlers are plain
`def`s, as in the tutorial, so FastAPI runs them in its thread pool.

Run: uvicorn --app-dir scripts/bench tutorial_app:app --host 127.0.0.1 --port 8000
"""

import os
import random
import time

os.environ.setdefault("STATSD_PREFIX", "statstest")

from fastapi import FastAPI  # noqa: E402
from statsd.defaults.env import statsd  # noqa: E402

MAX_DELAY_S = int(os.environ.get("DEMO_MAX_DELAY_MS", "500")) / 1000.0

app = FastAPI()


@app.get("/")
@statsd.timer("root")
def root(msg: str | None = None):
    # Counted inside the timed function, like the tutorial's counter call.
    statsd.incr("root.called")
    if MAX_DELAY_S > 0:
        time.sleep(random.uniform(0, MAX_DELAY_S))
    return {"message": msg if msg else "No message provided!"}


@app.get("/user")
def user(id: int):
    statsd.set("user", id)
    return {"id": id}

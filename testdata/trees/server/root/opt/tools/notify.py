#!/usr/bin/env python3
"""Post a short message to the #hr-deploys Slack channel."""

import json
import sys
import urllib.request

WEBHOOK_URL = "{{SLACK_WEBHOOK_URL}}"


def notify(text: str) -> None:
    body = json.dumps({"text": text}).encode()
    req = urllib.request.Request(
        WEBHOOK_URL, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


if __name__ == "__main__":
    notify(" ".join(sys.argv[1:]) or "ping")

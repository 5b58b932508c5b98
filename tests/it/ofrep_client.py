"""Drives a live actuator daemon through the official OpenFeature Python SDK and OFREP provider.

Usage: ofrep_client.py BASE_URL KEY[,KEY...]

Prints one JSON document with what the SDK saw; the Rust test (tests/it/ofrep.rs) asserts on
it. The provider evaluates one flag per call (POST /ofrep/v1/evaluate/flags/{key}); the bulk
endpoint and its ETag revalidation are exercised with `requests`, the provider's own HTTP
library.
"""

import json
import sys

import requests
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def plain(x):
    """Enum members (Reason, ErrorCode) as their string values."""
    return getattr(x, "value", x)


def details(d):
    return {
        "value": d.value,
        "variant": d.variant,
        "reason": plain(d.reason),
        "error_code": plain(d.error_code),
        "error_message": d.error_message,
        "metadata": dict(d.flag_metadata or {}),
    }


def main():
    base, keys = sys.argv[1], sys.argv[2].split(",")
    api.set_provider(OFREPProvider(base_url=base, timeout=10.0))
    client = api.get_client()
    fallback = {"fallback": True}
    out = {"assignments": {}}
    for key in keys:
        ctx = EvaluationContext(targeting_key=key, attributes={"region": "eu", "tier": 2})
        out["assignments"][key] = details(client.get_object_details("chat", fallback, ctx))
    out["unknown_flag"] = details(
        client.get_object_details("no.such.slot", fallback, EvaluationContext(targeting_key="u"))
    )
    out["missing_key"] = details(
        client.get_object_details("chat", fallback, EvaluationContext(attributes={"region": "eu"}))
    )
    out["static_without_key"] = details(
        client.get_object_details("static", fallback, EvaluationContext())
    )
    out["wrong_type"] = details(
        client.get_boolean_details("chat", False, EvaluationContext(targeting_key="u"))
    )

    url = base.rstrip("/") + "/ofrep/v1/evaluate/flags"
    body = {"context": {"targetingKey": keys[0], "region": "eu"}}
    first = requests.post(url, json=body, timeout=10)
    etag = first.headers.get("ETag")
    again = requests.post(url, json=body, headers={"If-None-Match": etag}, timeout=10)
    other = requests.post(
        url, json={"context": {"targetingKey": keys[1]}}, headers={"If-None-Match": etag}, timeout=10
    )
    out["bulk"] = {
        "status": first.status_code,
        "etag": etag,
        "body": first.json(),
        "revalidate_status": again.status_code,
        "revalidate_body": again.text,
        "other_context_status": other.status_code,
        "other_context_etag": other.headers.get("ETag"),
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

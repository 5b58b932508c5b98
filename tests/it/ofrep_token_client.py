"""Evaluates the flag `chat` through the official OpenFeature Python SDK and OFREP provider,
sending the token in OFREP_TOKEN as `Authorization: Bearer`, as the provider's
`headers_factory` does for any OFREP server.

Usage: OFREP_TOKEN=... ofrep_token_client.py BASE_URL

Prints the evaluation details as JSON; tests/it/auth.rs asserts on them.
"""

import json
import os
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main():
    token = os.environ["OFREP_TOKEN"]
    api.set_provider(
        OFREPProvider(
            base_url=sys.argv[1],
            headers_factory=lambda: {"Authorization": f"Bearer {token}"},
            timeout=10.0,
        )
    )
    d = api.get_client().get_object_details(
        "chat", {"fallback": True}, EvaluationContext(targeting_key="u1")
    )
    json.dump(
        {
            "value": d.value,
            "variant": d.variant,
            "error_code": getattr(d.error_code, "value", d.error_code),
            "error_message": d.error_message,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()

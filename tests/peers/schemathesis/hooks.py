"""Checks of our own for schemathesis runs against the admin API (SCHEMATHESIS_HOOKS=hooks).

`writes_are_refused`: every operation that changes something (anything but GET) must be
refused with EXPECT_STATUS (401 without a token, 403 with a read-only token; 401 whenever the
request went without one), whatever the generated input.
"""
import os

import schemathesis

EXPECTED = int(os.environ.get("EXPECT_STATUS", "0"))


@schemathesis.check
def writes_are_refused(ctx, response, case):
    # Only the operations the document declares: the coverage phase also tries other methods
    # (TRACE, ...), which are answered 405 before any token is looked at.
    if case.method.upper() == "GET" or case.method.upper() != case.operation.method.upper():
        return None
    # The coverage phase also sends requests without the token: those must get 401.
    sent_token = "authorization" in {name.lower() for name in response.request.headers}
    expected = EXPECTED if sent_token else 401
    if response.status_code != expected:
        raise AssertionError(
            f"{case.method} {case.formatted_path} answered {response.status_code}, not {expected}"
        )
    return None

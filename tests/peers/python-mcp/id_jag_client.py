"""Test peer: the MCP Python SDK's Enterprise-Managed Authorization client (SEP-990) against
Portcullis.

`IdentityAssertionOAuthProvider` (mcp 2.3.0) asks its assertion provider for an ID-JAG, presents
it at Portcullis's token endpoint with the JWT bearer grant, and calls the MCP server through
the gateway with the token it gets. The ID-JAG comes from the test IdP
(tests/peers/oidc-provider/sso-idp.mjs, POST /test/id-jag), signed with that IdP's published key,
as an enterprise IdP would issue it by token exchange.

Environment: MCP_URL (a gateway route), ISSUER (Portcullis's issuer), CLIENT_ID, CLIENT_SECRET,
AUTH_METHOD (client_secret_basic or client_secret_post), IDP (the test IdP's issuer), SUBJECT,
ASSERTED_SCOPE, GROUPS (comma-separated), SCOPE (requested; optional).
Prints one JSON line: the tools the token sees, the result of a tool call, a refused call, and how
many assertions were asked for. Exits 1 on any failure.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthToken


class MemoryStorage:
    """Token storage that lives as long as the process."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, info):
        self.client_info = info


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        sys.exit(f"id_jag_client: {name} is required")
    return value


async def main():
    asked = []

    async def assertion_provider(audience: str, resource: str) -> str:
        asked.append({"audience": audience, "resource": resource})
        spec = {
            "sub": env("SUBJECT"),
            "client_id": env("CLIENT_ID"),
            "aud": audience,
            "resource": resource,
            "scope": env("ASSERTED_SCOPE"),
            "groups": [g for g in env("GROUPS", "").split(",") if g],
        }
        async with httpx2.AsyncClient(timeout=10) as idp:
            answer = await idp.post(f"{env('IDP')}/test/id-jag", json=spec)
            answer.raise_for_status()
            return answer.json()["assertion"]

    auth = IdentityAssertionOAuthProvider(
        server_url=env("MCP_URL"),
        storage=MemoryStorage(),
        client_id=env("CLIENT_ID"),
        client_secret=env("CLIENT_SECRET"),
        issuer=env("ISSUER"),
        assertion_provider=assertion_provider,
        scope=os.environ.get("SCOPE") or None,
        token_endpoint_auth_method=env("AUTH_METHOD", "client_secret_post"),
    )
    async with httpx2.AsyncClient(auth=auth, timeout=20) as http:
        async with Client(streamable_http_client(env("MCP_URL"), http_client=http)) as client:
            tools = await client.list_tools()
            listed = sorted(t.name for t in tools.tools)
            called = await client.call_tool("list_contacts", {})
            text = " ".join(getattr(c, "text", "") for c in called.content)
            try:
                refused = await client.call_tool("export_contacts", {})
                refusal = {"is_error": bool(getattr(refused, "is_error", False) or getattr(refused, "isError", False))}
            except Exception as e:  # the gateway refuses with a JSON-RPC error
                refusal = {"error": str(e)}
    print(json.dumps({"tools": listed, "call": text, "refused": refusal, "assertions": asked}))


asyncio.run(main())

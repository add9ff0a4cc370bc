"""A real MCP server built with the official Python SDK (MCPServer, Streamable HTTP):
the tools an employee calls in .ci/mcp_sdk.sh. Usage: mcp_tool_server.py PORT"""

import asyncio
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("sdk-tools")


@server.tool()
def echo(text: str) -> str:
    """Repeat a text."""
    return f"echo: {text}"


@server.tool()
async def slow(seconds: float) -> str:
    """Wait, then answer."""
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ToolError(f"failed on purpose: {reason}")


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))

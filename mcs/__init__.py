"""Core library of MCS: settings, errors, name rules and the pieces the MCP server and deploy worker share."""

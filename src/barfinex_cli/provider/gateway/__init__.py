"""The provider's gateway: REST, WebSocket, MCP, auth, the app registry, the proxy, webhooks."""

"""The agent's HTTP/JSON listener (issue 14): Consul-shaped endpoints and a Server-Sent Events
stream, off unless ``http_addr`` is set.

Only :mod:`pyserf.http.server` imports the HTTP library (aiohttp); the runtime imports it only
when the listener is enabled, so an agent without ``http_addr`` does not carry it
(tests/unit/test_agent_rss.py). The other modules here are pure and cheap.
"""

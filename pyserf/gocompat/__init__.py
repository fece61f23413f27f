"""Go-compatibility helpers: the texts and parsing rules of Go's standard library that serf
users see (strconv, time durations, fmt verbs, errno texts, host:port, encoding/json).

One module per Go package or concern; each imports only what it needs at module level, so an
idle agent pays for none of the JSON or decimal machinery (tests/unit/test_agent_rss.py).
"""

"""The reference staging app the swarm tests against (app.py), and its guardrails (guards.py)."""

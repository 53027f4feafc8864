"""The `spotline` command line: an entry point over the flows, not part of the plain library.

It lives outside `spotline/` because it starts flow runs and talks to a Prefect server; the
library under `spotline/` must stay importable (and testable) without Prefect.
"""

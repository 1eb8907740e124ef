"""Local evaluation of AI algorithms: statistics with confidence intervals, reports, feedback.

Everything here works on plain numpy arrays (labels, scores, group columns); nothing touches the
database, so the same code serves the CLI, the portal, background jobs and tests.
"""

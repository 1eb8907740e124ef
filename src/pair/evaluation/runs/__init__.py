"""Evaluation runs: a cohort of the node's cases, a truth source and a registered algorithm,
run in the sandbox and scored with ``pair.evaluation`` (issue 5)."""

"""Human-readable evaluation report: figures, CLAIM-style checklist and a self-contained HTML."""

"""AI use cases (Define-AI structure) bound to CDEs: authoring, review, publication, and the
checks algorithm submission runs against the use case a manifest declares."""

"""The national registry at the hub: cohort queries, exports, data quality and dashboards over
the hub's own repository, clinical and report tables across every member facility."""

"""AI performance registry at the hub: signed evaluation feedback per algorithm version x site
x period, per-site estimates, random-effects pooling and drift alerts
(docs/performance-registry.md)."""

"""Administration pages and the service functions behind them (users, tokens, AE titles,
de-identification profiles, the quarantine queue and the audit log view)."""

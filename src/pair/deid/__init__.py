"""De-identification at the site: PS3.15 Annex E profile with options, keyed UID remapping,
pseudonyms and date shifts held in a site-private mapping store, residual-PHI scanning."""

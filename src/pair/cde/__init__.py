"""RadElement common data elements (CDEs): the coded vocabulary shared by reporting,
AI algorithms, use cases and the registry. Content only; logic lives in ``pair.reporting``."""

from pair.cde.catalog import Catalog, CdeElement, CdeSet, CdeValue, catalog

__all__ = ["Catalog", "CdeElement", "CdeSet", "CdeValue", "catalog"]

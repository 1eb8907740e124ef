"""The site's case repository: ingest pipeline, storage, index, DICOMweb and DIMSE services."""

"""drsentry: scheduled disaster recovery for PostgreSQL on AWS that proves every backup restores."""

# The version of this source tree, for where the package has no metadata (the Lambda layer);
# pyproject.toml says the same (tests/unit/test_provenance.py holds them together).
__version__ = "0.1.0"

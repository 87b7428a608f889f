"""Services built on the staleless Python package alone."""

"""A label design from outside the product: drawn by an independent generator (``labels``)."""

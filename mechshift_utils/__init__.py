"""mechshift_utils: shared code of the mechshift notebooks."""

"""The bottom layer: parameter checks, seeds and devices. Imports nothing else of mechshift_utils."""

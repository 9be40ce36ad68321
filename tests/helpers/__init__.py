"""Builders the tests share: small scenes, analytic fields, tiny runs."""

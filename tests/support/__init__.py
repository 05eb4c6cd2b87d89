"""Helpers shared by the unit, integration and security tests (on the path through pytest's `pythonpath`)."""

"""orch: turns a strategy's target weights into orders, once, with a complete SQL audit trail."""

__version__ = "0.1.0"

"""sms-gateway: one HTTP call to send an SMS through prioritized, circuit-broken providers."""

__version__ = "0.1.0"

"""ussdgw: a USSD/SMS short-code platform (SMPP 3.4 gateway) with its own carrier simulator."""

__version__ = "0.1.0"

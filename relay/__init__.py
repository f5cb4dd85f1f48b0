"""relay: a self-hosted webhook relay for 2Checkout (Verifone) IPN, LCN and INS notifications."""

__version__ = "0.1.0"

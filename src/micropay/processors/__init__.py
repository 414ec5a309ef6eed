"""Card processor adapters (Stripe) implementing ``micropay.service.ports.Processor``."""

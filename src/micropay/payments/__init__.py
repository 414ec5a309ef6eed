"""Payment models as plans of ledger transfers (prepaid wallet, post-pay tab, pay-as-you-go)."""

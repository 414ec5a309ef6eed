"""SQL of tips, metered usage and subscriptions, shared by the SQLite and PostgreSQL adapters.

A mixin of :class:`micropay.store.payments_sql.PaymentsSql`: it uses the
adapter's cursor (``self._cur``) and placeholder rewriting (``self._sql``).
"""

from __future__ import annotations


class BillingSql:
    pass

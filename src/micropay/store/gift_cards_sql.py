"""SQL of gift cards, vouchers and store credit, shared by the SQLite and PostgreSQL adapters.

A mixin of :class:`micropay.store.payments_sql.PaymentsSql`: it uses the
adapter's cursor (``self._cur``) and placeholder rewriting (``self._sql``).
Cards hold no balance column: a card's remaining value is its ledger account.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from micropay.payments.gift_cards import CardKind, GiftCard, RedemptionRecord
from micropay.store.sql import Cursor

_CARD_COLUMNS = (
    "id, batch_id, code_hash, kind, merchant_id, currency, value_micros, expires_at_us,"
    " expired, created_at_us"
)
_REDEMPTION_COLUMNS = (
    "id, card_id, actor, actor_id, idempotency_key, request_hash, amount_micros,"
    " remaining_micros, credit_account_id, transfer_id, created_at_us"
)


def _card(r: Sequence[Any]) -> GiftCard:
    return GiftCard(r[0], r[1], r[2], CardKind(r[3]), r[4] or 0, r[5], r[6], r[7], bool(r[8]), r[9])


class GiftCardsSql:
    _cur: Cursor

    def _sql(self, text: str) -> str:
        return text

    def insert_gift_card_batch(
        self,
        batch_id: int,
        kind: str,
        merchant_id: int,
        currency: str,
        value_micros: int,
        card_count: int,
        expires_at_us: int,
        idempotency_key: str,
        request_hash: str,
        now_us: int,
    ) -> None:
        self._cur.execute(
            self._sql(
                "INSERT INTO gift_card_batches (id, kind, merchant_id, currency, value_micros,"
                " card_count, expires_at_us, idempotency_key, request_hash, created_at_us,"
                " issuer_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                batch_id,
                kind,
                merchant_id or None,
                currency,
                value_micros,
                card_count,
                expires_at_us,
                idempotency_key,
                request_hash,
                now_us,
                merchant_id,
            ),
        )

    def find_gift_card_batch(self, issuer_id: int, idempotency_key: str) -> tuple[int, str] | None:
        """(batch id, request hash) of the batch issued under this key, if any."""
        self._cur.execute(
            self._sql(
                "SELECT id, request_hash FROM gift_card_batches"
                " WHERE issuer_id = ? AND idempotency_key = ?"
            ),
            (issuer_id, idempotency_key),
        )
        rows = self._cur.fetchall()
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def insert_gift_card(self, card: GiftCard) -> int:
        """Insert a card (its id is assigned here: the next card number) and return its id."""
        self._cur.execute(
            self._sql(
                "INSERT INTO gift_cards (batch_id, code_hash, kind, merchant_id, currency,"
                " value_micros, expires_at_us, expired, created_at_us)"
                " VALUES (?,?,?,?,?,?,?,?,?) RETURNING id"
            ),
            (
                card.batch_id,
                card.code_hash,
                card.kind.value,
                card.merchant_id or None,
                card.currency,
                card.value_micros,
                card.expires_at_us,
                False,
                card.created_at_us,
            ),
        )
        return int(self._cur.fetchall()[0][0])

    def find_gift_card(self, code_hash: str) -> GiftCard | None:
        self._cur.execute(
            self._sql(f"SELECT {_CARD_COLUMNS} FROM gift_cards WHERE code_hash = ?"), (code_hash,)
        )
        rows = self._cur.fetchall()
        return _card(rows[0]) if rows else None

    def get_gift_card(self, card_id: int) -> GiftCard | None:
        self._cur.execute(
            self._sql(f"SELECT {_CARD_COLUMNS} FROM gift_cards WHERE id = ?"), (card_id,)
        )
        rows = self._cur.fetchall()
        return _card(rows[0]) if rows else None

    def gift_cards_of_batch(self, batch_id: int) -> list[GiftCard]:
        self._cur.execute(
            self._sql(f"SELECT {_CARD_COLUMNS} FROM gift_cards WHERE batch_id = ? ORDER BY id"),
            (batch_id,),
        )
        return [_card(r) for r in self._cur.fetchall()]

    def expiring_gift_cards(self, now_us: int, limit: int) -> list[int]:
        """Numbers of cards past their expiry that the expiry job has not yet handled."""
        self._cur.execute(
            self._sql(
                "SELECT id FROM gift_cards WHERE expires_at_us > 0 AND NOT expired"
                " AND expires_at_us <= ? ORDER BY expires_at_us, id LIMIT ?"
            ),
            (now_us, limit),
        )
        return [int(r[0]) for r in self._cur.fetchall()]

    def mark_gift_card_expired(self, card_id: int, breakage_transfer_id: int | None) -> bool:
        """Expire a card once: False if it was already expired (a concurrent run won)."""
        self._cur.execute(
            self._sql(
                "UPDATE gift_cards SET expired = ?, breakage_transfer_id = ?"
                " WHERE id = ? AND NOT expired"
            ),
            (True, breakage_transfer_id, card_id),
        )
        return self._cur.rowcount == 1

    def find_gift_card_redemption(
        self, actor: str, actor_id: int, idempotency_key: str
    ) -> RedemptionRecord | None:
        self._cur.execute(
            self._sql(
                f"SELECT {_REDEMPTION_COLUMNS} FROM gift_card_redemptions"
                " WHERE actor = ? AND actor_id = ? AND idempotency_key = ?"
            ),
            (actor, actor_id, idempotency_key),
        )
        rows = self._cur.fetchall()
        return RedemptionRecord(*rows[0]) if rows else None

    def insert_gift_card_redemption(self, r: RedemptionRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO gift_card_redemptions ({_REDEMPTION_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                r.id,
                r.card_id,
                r.actor,
                r.actor_id,
                r.idempotency_key,
                r.request_hash,
                r.amount_micros,
                r.remaining_micros,
                r.credit_account_id,
                r.transfer_id,
                r.created_at_us,
            ),
        )

    def gift_card_failures(self, actor: str, actor_id: int, window_start_us: int) -> int:
        self._cur.execute(
            self._sql(
                "SELECT failures FROM gift_card_attempts"
                " WHERE actor = ? AND actor_id = ? AND window_start_us = ?"
            ),
            (actor, actor_id, window_start_us),
        )
        rows = self._cur.fetchall()
        return int(rows[0][0]) if rows else 0

    def add_gift_card_failure(self, actor: str, actor_id: int, window_start_us: int) -> None:
        """Count one failed attempt (an upsert: safe under concurrent writers)."""
        self._cur.execute(
            self._sql(
                "INSERT INTO gift_card_attempts (actor, actor_id, window_start_us, failures)"
                " VALUES (?,?,?,1) ON CONFLICT (actor, actor_id, window_start_us)"
                " DO UPDATE SET failures = gift_card_attempts.failures + 1"
            ),
            (actor, actor_id, window_start_us),
        )

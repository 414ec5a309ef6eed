"""Tip earnings: a tip may name the item it is for, and is split like that item's sales.

A sale row (and its shares) was keyed by its purchase, with a foreign key to
``purchases``. A tip for an item with a revenue split is now a sale too, keyed
by the tip's id (purchases and tips draw their ids from one generator, so the
key stays unique): the foreign key to ``purchases`` goes, and ``tip_id``
(references ``tips``; equal to the key when set, NULL for a purchase) says
which kind of sale a row is. ``tips.item_ref`` keeps what a tip was for
("" for nothing in particular).

Revision ID: 0013_tip_earnings
Revises: 0012_purchase_lookups
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_tip_earnings"
down_revision = "0012_purchase_lookups"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# SQLite's foreign keys have no names: batch mode names them by this convention.
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_SQLITE_PURCHASE_FK = "fk_sales_purchase_id_purchases"


def _purchase_fk_name() -> str | None:
    for fk in sa.inspect(op.get_bind()).get_foreign_keys("sales"):
        if fk["referred_table"] == "purchases":
            return fk["name"] or _SQLITE_PURCHASE_FK
    return None


def upgrade() -> None:
    op.add_column("tips", sa.Column("item_ref", sa.String(128), nullable=False, server_default=""))
    name = _purchase_fk_name()
    with op.batch_alter_table("sales", naming_convention=_NAMES) as batch:
        if name is not None:
            batch.drop_constraint(name, type_="foreignkey")
        batch.add_column(sa.Column("tip_id", Id, nullable=True))
        batch.create_foreign_key("sale_tip", "tips", ["tip_id"], ["id"])
        batch.create_check_constraint("sale_tip_is_key", "tip_id IS NULL OR tip_id = purchase_id")


def downgrade() -> None:
    tip_sales = op.get_bind().execute(
        sa.text("SELECT count(*) FROM sales WHERE tip_id IS NOT NULL")
    )
    if tip_sales.scalar_one():
        raise RuntimeError("tips have been split among payees: cannot go below 0013_tip_earnings")
    with op.batch_alter_table("sales", naming_convention=_NAMES) as batch:
        batch.drop_constraint("sale_tip_is_key", type_="check")
        batch.drop_constraint("sale_tip", type_="foreignkey")
        batch.drop_column("tip_id")
        batch.create_foreign_key("sales_purchase_id_fkey", "purchases", ["purchase_id"], ["id"])
    with op.batch_alter_table("tips") as batch:
        batch.drop_column("item_ref")

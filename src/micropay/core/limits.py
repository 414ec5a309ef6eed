"""Every size, count and bound of the ledger, in one place.

Names end in ``_max``/``_min`` so a reader can find the limit behind any check.
Tests exercise each limit at the limit and one past it.
"""

from __future__ import annotations

# Signed 64-bit maximum: the largest integer both SQLite and PostgreSQL store.
int64_max = 2**63 - 1

# Amounts and every account counter are bounded by the signed 64-bit maximum.
amount_micros_max = int64_max

# Ids are positive signed 64-bit integers; the maximum itself is reserved.
id_max = int64_max - 1
id_min = 1
# Ids from here up are reserved for transfers the system derives itself
# (hold expiry); clients use ids below it.
system_id_min = 2**62
client_id_max = system_id_min - 1

# Transfers (or accounts) in one batch / one database transaction.
batch_transfers_max = 8_190
batch_accounts_max = 8_190

# Free-text fields.
reference_chars_max = 128
metadata_bytes_max = 4_096
account_kind_chars_max = 32
owner_ref_chars_max = 128

# Business code of a transfer (what kind of movement it is).
code_max = 65_535

# Pending transfer timeout: at most ~68 years, so expiry times stay in int64.
timeout_s_max = 2**31 - 1

# Infrastructure: bounded retries for busy/serialization/deadlock errors.
store_retries_max = 16
store_retry_backoff_s_max = 0.5
sqlite_busy_timeout_ms = 10_000

# Group commit.
group_commit_queue_max = 65_536
group_commit_wait_s_max = 30.0
group_commit_linger_s_max = 0.002  # how long a commit waits for callers still queueing

# Read pages (lookups, exports stream in pages of this many rows).
page_rows_max = 10_000
# Account states one SQLite connection keeps for the plain path (a few hundred
# bytes each); a cache that would grow past it starts again empty.
cached_account_states_max = 100_000

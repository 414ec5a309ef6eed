"""The ``music`` month: listeners buying songs and albums, revenue split artist / label.

Each label is a merchant selling its artists' songs (0.99 USD) and albums
(9.99 USD); every item's proceeds are split artist 70% / label 30% by
``Payouts`` (attached to the purchase, so the split is written in the
purchase's own transaction), held 7 days, and paid weekly to verified payees
at or above the threshold. Artists' popularity follows a Zipf-like curve, so
some earn well past the threshold and the tail never reaches it.

Like ``news``, the month runs under the settlement planner and the naive
policy side by side, each on its own fresh SQLite store, seeing the same
seeded stream of purchases. Checks: both charge oracles, processor payouts
equal ledger payouts, and every payee's credited shares equal an independent
tally of exactly ``price * bps / 10,000`` per sale (``split_ok``).
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micropay.fees.schedules import CARD_MICRO_USD, CARD_STANDARD_USD, FeeSchedule
from micropay.payouts.plans import Bucket, Schedule, payee_account
from micropay.payouts.splits import Share, bps_whole
from micropay.settlement.planner import (
    PlannerInput,
    SpendEstimate,
    charge_fee_micros,
    naive_plan,
    plan,
)
from micropay.simulate._common import (
    Run,
    add_customers,
    buy,
    full_report,
    new_run,
    pay_out,
    sale_share_legs,
    summary,
    verify_payee,
    zipf_weights,
)
from micropay.simulate.adapter import tab_policy_for
from micropay.simulate.basics import CURRENCY, DAY_S, kind_of, max_tab_exposure, poisson


@dataclass(frozen=True, slots=True)
class MusicConfig:
    customers: int = 5_000
    labels: int = 50
    artists_per_label: int = 5
    songs_per_artist: int = 10  # and one album each
    days: int = 30
    seed: int = 1
    songs_per_day: float = 0.2  # per listener, Poisson
    albums_per_day: float = 0.01
    song_micros: int = 990_000
    album_micros: int = 9_990_000
    artist_bps: int = 7_000  # the label gets the rest
    popularity_exponent: float = 0.8
    share_tab: float = 0.6
    share_wallet: float = 0.3  # the rest pay per item
    tab_cap_micros: int = 25_000_000
    carry_days: int = 90
    payout_threshold_micros: int = 100_000_000
    hold_days: int = 7
    schedules: tuple[FeeSchedule, ...] = (CARD_STANDARD_USD, CARD_MICRO_USD)

    def planner_input(self) -> PlannerInput:
        s, a = self.songs_per_day, self.albums_per_day
        mean = s * self.song_micros + a * self.album_micros
        var = s * self.song_micros**2 + a * self.album_micros**2  # compound Poisson
        return PlannerInput(
            SpendEstimate(mean, var),
            self.tab_cap_micros,
            self.schedules,
            period_days=self.days,
            carry_days=max(self.days, self.carry_days),
            prepay_days=self.days,
        )


@dataclass
class _Catalogue:
    """One run's ids: label merchants, and payees of labels and artists (by index)."""

    merchants: list[int]
    label_payees: list[int]
    artist_payees: list[int]


def _setup(run: Run, cfg: MusicConfig, kinds: list[str]) -> _Catalogue:
    p, payouts = run.payments, run.payouts
    cat = _Catalogue([], [], [])
    payee_args: dict[str, Any] = {
        "schedule": Schedule.weekly,
        "threshold_micros": cfg.payout_threshold_micros,
        "hold_s": cfg.hold_days * DAY_S,
    }
    for label in range(cfg.labels):
        merchant = p.create_merchant(f"Label {label}", CURRENCY)
        cat.merchants.append(merchant.id)
        payee = payouts.create_payee(f"Label {label}", CURRENCY, f"ba_l{label}", **payee_args)
        cat.label_payees.append(payee.id)
        verify_payee(run, payee.id, f"ba_l{label}")
        for a in range(cfg.artists_per_label):
            artist = label * cfg.artists_per_label + a
            who = payouts.create_payee(f"Artist {artist}", CURRENCY, f"ba_a{artist}", **payee_args)
            cat.artist_payees.append(who.id)
            verify_payee(run, who.id, f"ba_a{artist}")
            split = [Share(who.id, cfg.artist_bps), Share(payee.id, bps_whole - cfg.artist_bps)]
            for song in range(cfg.songs_per_artist):
                ref = f"s{artist}-{song}"
                p.set_item(merchant.id, ref, f"Song {artist}-{song}", cfg.song_micros)
                payouts.set_split(merchant.id, ref, split)
            p.set_item(merchant.id, f"al{artist}", f"Album {artist}", cfg.album_micros)
            payouts.set_split(merchant.id, f"al{artist}", split)
    add_customers(run, kinds)
    return cat


def run_music(cfg: MusicConfig, directory: Path | None = None) -> dict[str, Any]:
    """Run the month under the planner and the naive policy; one JSON-able report."""
    if min(cfg.customers, cfg.labels, cfg.artists_per_label, cfg.songs_per_artist, cfg.days) <= 0:
        raise ValueError("customers, labels, artists, songs and days must be positive")
    if not 0 < cfg.artist_bps < bps_whole:
        raise ValueError("the artist's share must be between 0 and 10,000 basis points")
    rng = random.Random(cfg.seed)
    kinds = [kind_of(i, cfg.share_tab, cfg.share_wallet) for i in range(cfg.customers)]
    artists = cfg.labels * cfg.artists_per_label
    popularity = zipf_weights(artists, cfg.popularity_exponent)
    inp = cfg.planner_input()
    plans = {"planner": plan(inp), "naive": naive_plan(inp)}
    fee_of = {
        price: charge_fee_micros(cfg.schedules, price)
        for price in (cfg.song_micros, cfg.album_micros)
    }
    with tempfile.TemporaryDirectory(prefix="micropay-sim-", dir=directory) as tmp:
        runs = [
            new_run(
                name,
                chosen,
                Path(tmp),
                tab_policy=tab_policy_for(
                    chosen,
                    period_s=cfg.days * DAY_S,
                    carry_max_age_s=cfg.carry_days * DAY_S,
                ),
            )
            for name, chosen in plans.items()
        ]
        try:
            cats = {run.name: _setup(run, cfg, kinds) for run in runs}
            # Independent tallies per run: payee id -> earned; price -> items sold.
            earned: dict[str, dict[int, int]] = {r.name: defaultdict(int) for r in runs}
            sold: dict[str, dict[int, int]] = {r.name: defaultdict(int) for r in runs}
            for day in range(cfg.days):
                for listener in range(cfg.customers):
                    wanted = [cfg.song_micros] * poisson(rng, cfg.songs_per_day)
                    wanted += [cfg.album_micros] * poisson(rng, cfg.albums_per_day)
                    for n, price in enumerate(wanted):
                        artist = rng.choices(range(artists), cum_weights=popularity)[0]
                        song = rng.randrange(cfg.songs_per_artist)
                        ref = f"s{artist}-{song}" if price == cfg.song_micros else f"al{artist}"
                        label = artist // cfg.artists_per_label
                        for run in runs:
                            cat = cats[run.name]
                            run.at(day, listener * (DAY_S - 2) // cfg.customers, n)
                            key = f"d{day}-l{listener}-{n}"
                            if buy(run, listener, cat.merchants[label], ref, key):
                                artist_part = price * cfg.artist_bps // bps_whole
                                earned[run.name][cat.artist_payees[artist]] += artist_part
                                earned[run.name][cat.label_payees[label]] += price - artist_part
                                sold[run.name][price] += 1
                for run in runs:
                    run.day_end(day)
                    pay_out(run)
            reports = {}
            for run in runs:
                run.at(cfg.days, 0)
                run.payments.charges.close_tab_periods()
                report = full_report(run, cfg.schedules, run.plan.tab_limit_micros)
                tab_customers = [c for c, k in run.kind_of.items() if k == "tab"]
                report["max_exposure_micros"] = max_tab_exposure(run.payments.store, tab_customers)
                report["per_item_fee_micros"] = sum(
                    fee_of[price] * n for price, n in sold[run.name].items()
                )
                report["songs_sold"] = sold[run.name][cfg.song_micros]
                report["albums_sold"] = sold[run.name][cfg.album_micros]
                report.update(_split_facts(run, cfg, cats[run.name], earned[run.name]))
                reports[run.name] = report
        finally:
            for run in runs:
                run.payments.store.close()
    params = {
        "customers": cfg.customers,
        "labels": cfg.labels,
        "artists": artists,
        "days": cfg.days,
        "seed": cfg.seed,
        "tab_cap_micros": cfg.tab_cap_micros,
    }
    result = summary("music", params, reports)
    main = reports["planner"]
    result["artist_share_micros"] = main["artist_share_micros"]
    result["label_share_micros"] = main["label_share_micros"]
    result["split_ok"] = all(r["split_ok"] for r in reports.values())
    result["reconcile_ok"] = result["reconcile_ok"] and result["split_ok"]
    result["payees_paid"] = main["payees_paid"]
    return result


def _split_facts(
    run: Run, cfg: MusicConfig, cat: _Catalogue, earned: dict[int, int]
) -> dict[str, Any]:
    """Each sale's legs in the ledger are exactly artist 70% / label 30% of its price, and
    each payee's credited shares equal the independent tally."""
    artist_accounts = {payee_account(p, Bucket.pending, CURRENCY) for p in cat.artist_payees}
    credited: dict[int, int] = defaultdict(int)
    wrong_sales = 0
    legs = sale_share_legs(run)
    for parts in legs.values():
        price = sum(amount for _, amount in parts)
        artist = [amount for account, amount in parts if account in artist_accounts]
        label = [amount for account, amount in parts if account not in artist_accounts]
        exact = price * cfg.artist_bps // bps_whole
        if price not in (cfg.song_micros, cfg.album_micros) or (artist, label) != (
            [exact],
            [price - exact],
        ):
            wrong_sales += 1
        for account, amount in parts:
            credited[account] += amount

    def of(payee_id: int) -> int:
        return credited.get(payee_account(payee_id, Bucket.pending, CURRENCY), 0)

    payees = cat.artist_payees + cat.label_payees
    wrong = [pid for pid in payees if of(pid) != earned.get(pid, 0)]
    artist_total = sum(of(pid) for pid in cat.artist_payees)
    label_total = sum(of(pid) for pid in cat.label_payees)
    return {
        "artist_share_micros": artist_total,
        "label_share_micros": label_total,
        "sales_split": len(legs),
        "sales_split_wrong": wrong_sales,
        "split_mismatches": len(wrong),
        "split_ok": not wrong
        and not wrong_sales
        and len(legs) == run.purchases
        and artist_total + label_total == sum(run.gross.values()),
    }

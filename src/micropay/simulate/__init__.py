"""Month simulations through the real payments service and store (BENCHMARKS.md §3)."""

from micropay.simulate.news import NewsConfig, run_news

__all__ = ["NewsConfig", "run_news"]

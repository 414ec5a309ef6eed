"""Processor fee schedules, as data."""

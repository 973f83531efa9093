"""Runnable example systems built on Minions."""

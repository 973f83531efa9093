"""An on-chain trading bot, runnable offline: simulated chain events, prices and transactions."""

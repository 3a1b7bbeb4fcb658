"""Connectors behind one protocol: ccxt (live), replay (files or the bundled synthetic market),
and the paper broker (simulated orders over any data source)."""

"""Integrity of candle series: the gap scan and the self-healer."""

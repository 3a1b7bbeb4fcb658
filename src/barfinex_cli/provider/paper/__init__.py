"""The paper broker: a simulated exchange account over any market data source."""

"""What every role shares: settings, logging, the service lifecycle and connecting to the bus."""

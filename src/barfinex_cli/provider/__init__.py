"""The provider role: the one door to exchanges, market history, integrity and the gateway."""

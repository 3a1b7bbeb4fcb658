"""The kernel: builds the bus, clock, stores and gateway client once and starts roles on them."""

//! I/O-free ADS connection state machine.

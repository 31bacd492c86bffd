"""Multi-party runtime: sessions, dealer, communication, launch."""

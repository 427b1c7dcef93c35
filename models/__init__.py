"""Demo models: trained at build time from data that ships inside packages, saved to the BentoML store."""

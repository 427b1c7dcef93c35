"""What sits in front of the runners: protocol codecs, validation, errors, auth, limits, cache."""

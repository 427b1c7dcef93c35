"""Assembly: the one configuration read at start-up, and the wiring of one worker's components."""

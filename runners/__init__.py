"""One runner per framework behind one interface, and the adaptive batcher that feeds them."""

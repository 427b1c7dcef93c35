"""Inference beside real time: batch jobs (rows in, results kept for a while, readable through any replica)."""

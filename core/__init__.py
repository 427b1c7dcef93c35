"""What every layer shares and nothing in the project below it: errors, the Redis breaker."""

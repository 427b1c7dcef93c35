"""The demo models: their data, networks and training, built into the store through the same
import path a user's model takes (`python -m demo.build`). Nothing here is imported by the server."""

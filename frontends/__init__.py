"""Protocol front ends over the one request pipeline: OIP REST and /predict (one ASGI app), the admin API."""

"""The one request pipeline every front end (OIP REST, /predict, gRPC) runs a request through."""

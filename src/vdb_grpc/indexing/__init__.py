"""Index work: sizing of builds and of the embedded server."""
